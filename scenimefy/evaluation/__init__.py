"""The paper's metrics (FID, KID, L_BCE) and scoring a translator with them (no Ray here)."""
