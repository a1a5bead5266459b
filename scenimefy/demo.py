"""`scenimefy demo`: the whole translator path on a fresh machine, with no data and no GPU.

Draws procedural photo/anime scenes and pseudo pairs, trains the translator on them through
Ray Train (2 CPU workers, the `tiny` preset), logs to MLflow, translates the held-out photos
and writes a before/after grid.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from scenimefy.config import load_config
from scenimefy.data.decode import list_image_files, load_image
from scenimefy.data.demo_scenes import write_demo_dataset
from scenimefy.images import image_grid, save_image_atomic

DEMO_SIZE = 64


def run_demo(*, out_dir: str, overrides: list[str] | tuple[str, ...] = (), workers: int = 2) -> dict[str, str]:
    from scenimefy.distributed.translator import train_translator_on_ray
    from scenimefy.inference import load_translator, translate_paths

    out = Path(out_dir).absolute()
    started = time.perf_counter()

    # Data: procedural scenes in two styles, plus pseudo pairs of the same scenes.
    print(f"[demo] drawing demo data into {out / 'data'}", flush=True)
    data = write_demo_dataset(
        str(out / "data"), n_photos=160, n_anime=160, n_pairs=160, n_test=8, size=DEMO_SIZE, seed=0
    )

    # Train on Ray Train with the tiny preset.
    cfg = load_config(
        "tiny",
        [
            f"run.output_dir={out / 'runs'}",
            "run.name=demo",
            f"run.num_workers={workers}",
            f"data.photos={data['photos']}",
            f"data.anime={data['anime']}",
            f"data.pairs={data['pairs']}",
            *overrides,
        ],
    )
    outcome = train_translator_on_ray(cfg)

    # Translate the held-out photos and show before/after.
    generator = load_translator(outcome.generator, "cpu")
    translated = out / "translated"
    report = translate_paths(generator, [data["test"]], str(translated), batch_size=8, max_side=0, tile=0, tile_overlap=0, device="cpu", progress=False)
    before = [np.asarray(load_image(p)) for p in list_image_files(data["test"])]
    after = [np.asarray(load_image(p)) for p in sorted(report.written)]
    grid = image_grid([before, after], row_labels=["photo", "anime"])
    grid_path = out / "before_after.png"
    save_image_atomic(str(grid_path), grid)

    written = {
        "data": str(out / "data"),
        "run": outcome.run_dir,
        "generator": outcome.generator,
        "checkpoint": outcome.checkpoint,
        "translated": str(translated),
        "before_after": str(grid_path),
        "mlflow": f"{outcome.tracking_uri} (run {outcome.mlflow_run_id})",
    }
    print(f"[demo] finished in {time.perf_counter() - started:.0f} s; wrote:", flush=True)
    for key, value in written.items():
        print(f"  {key}: {value}", flush=True)
    return written
