"""Subcommands of the `scenimefy` CLI, one module each; `scenimefy.cli` wires them in."""
