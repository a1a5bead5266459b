"""The paper's metrics (FID, KID, L_BCE) and scoring a translator with them (docs/method.md,
"Evaluation"). No Ray and no MLflow here; `scenimefy.distributed.evaluate` runs them on Ray."""
