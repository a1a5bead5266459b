"""Networks, pure PyTorch: StyleGAN2 (stages 0-2) and the translator (stage 3); docs/method.md.

No Ray, no MLflow, no file paths, no config objects: constructors take plain arguments. Import
submodules directly, e.g. `scenimefy.models.translator`.
"""
