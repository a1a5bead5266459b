"""Scenimefy (ICCV 2023) on Ray: pseudo pairs, segmentation-guided selection and
semi-supervised photo-to-anime translation.

The package is layered (docs/architecture.md): models/ and losses/ (pure PyTorch); data/,
priors/, stages/, inference/, evaluation/ (no Ray, no MLflow); distributed/ (the Ray layer);
commands/ (the CLI); demo/ (demo only); config.py and configs/ (shared). docs/README.md is the
five-minute tour."""

__version__ = "0.1.0"
