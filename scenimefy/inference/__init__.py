"""Inference: the one translation path behind `scenimefy translate` and everything built on it.
No Ray and no MLflow here."""
