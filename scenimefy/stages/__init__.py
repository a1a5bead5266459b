"""Stages: step functions and worker loops that compose models and losses.

A loop sees the cluster only through a `WorkerContext` of plain callables (rank, report,
latest checkpoint, DDP wrapping); `scenimefy.distributed` binds them to Ray, tests to in-memory
recorders. No Ray and no MLflow here (docs/architecture.md, docs/ray.md).
"""
