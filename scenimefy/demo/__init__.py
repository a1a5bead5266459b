"""Demo-only code: procedural scenes, tiny random priors, and `scenimefy demo` itself."""
