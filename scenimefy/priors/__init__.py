"""Pretrained priors: resolving and loading CLIP, LPIPS, Mask2Former and the FID Inception
(`loading`), and Mask2Former's semantic scores behind pair selection (`segmentation`, the L_BCE
criterion of docs/method.md, "Stage 2"). No Ray and no MLflow here."""
