"""Networks (plain PyTorch). Import submodules directly, e.g. `scenimefy.models.translator`."""
