"""Demo-only code: procedural scenes, tiny priors (random CLIP and LPIPS, a Mask2Former trained on
the scenes), and `scenimefy demo` itself.

`run.py` is the demo's front door: it calls the pipeline driver of the Ray layer, importing it
only when the demo runs, so importing this package loads neither Ray nor MLflow."""
