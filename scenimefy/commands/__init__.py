"""Subcommands of the `scenimefy` CLI, one module each; `scenimefy.commands.cli` wires them in."""
