"""Scenimefy (ICCV 2023) on Ray: pseudo pairs, segmentation-guided selection and
semi-supervised photo-to-anime translation."""

__version__ = "0.1.0"
