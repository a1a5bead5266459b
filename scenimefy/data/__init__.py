"""Image data: tolerant decoding, tensor/image conversion, atomic writes, resumable batch streams
and training augmentation. No Ray and no MLflow here; `scenimefy.distributed.data` wraps these
in Ray Data (docs/architecture.md)."""
