"""`scenimefy demo`: the whole pipeline (stages 0 -> 3) on a fresh machine, with no data and no GPU.

Draws procedural photo and anime scenes (`scenimefy.demo.scenes`), writes tiny random
priors (`scenimefy.demo.priors`: CLIP and LPIPS for fine-tuning, Mask2Former for selection),
then runs `scenimefy.distributed.pipeline` on them with the `tiny` preset on CPU workers: a 32 px StyleGAN2
pretrained on the photos (G_s), fine-tuned on the anime scenes (G_t), pseudo pairs generated
and selected, and the translator trained on photos, anime and the selected pairs. It then
translates the held-out photos and writes `before_after.png`. A rerun skips finished stages.

Why the settings in DEMO_OVERRIDES (each also has its comment):
- A StyleGAN2 trained from scratch for a minute draws coloured blobs, not scenes, so the pseudo
  pairs carry a colour change (G_s: the photos' muted palette, G_t: the anime palette, sky blue
  over green) on a roughly shared layout, not content. 200 pretraining steps and 80 fine-tuning
  iterations are enough for that palette difference; a few hundred more steps still draw blobs.
- The supervised branch of stage 3 then teaches colour but blurs (lambda_sup decays only to
  0.38 over the tiny preset's 4 epochs). With the paper's lambda_hDCE = 0.1 every translation
  comes out as the same blurred anime palette, the layout of the photo lost; with 1.0, the
  weight CUT gives its PatchNCE content loss, horizons, ridges and lakes roughly keep their place.
- Batch 2 per worker: batch 1 for the same number of steps keeps less of the layout.
- The whole demo takes about 5-7 minutes on 2 idle CPU cores, most of it in stage 3 (README.md,
  "Quick start").
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from scenimefy.config import PriorsConfig, load_config
from scenimefy.data.decode import list_image_files, load_image
from scenimefy.data.images import atomic_path, image_grid, save_image_atomic
from scenimefy.demo.scenes import write_demo_dataset

DEMO_SIZE = 64  # demo images and the translator's resolution
DEMO_DATA = dict(
    n_photos=160, n_anime=160, n_pairs=0, n_test=8, size=DEMO_SIZE, seed=0
)  # no procedural pairs: stage 2 makes them
DEMO_OVERRIDES = (
    "run.name=procedural",  # a name of its own: a run name resumes, so it must not collide with other runs
    # Stage 0: 200 steps at global batch 4 (the tiny preset's G_ema tracks G: 0.02 kimg half-life).
    "pretrain.total_kimg=0.8",
    "pretrain.sample_every_kimg=0.4",
    "pretrain.checkpoint_every_kimg=0.8",
    # Stage 1: 80 iterations.
    "finetune.iterations=80",
    "finetune.sample_every_steps=40",
    "finetune.checkpoint_every_steps=80",
    # Stage 2: one pseudo pair per photo. The random Mask2Former scores every pair at about
    # ln(150) ~ 5.006 +- 0.001 and labels almost every image with one class, so the paper's rule
    # (L_BCE < 5.0 and >= 2 classes) keeps none of them. Keep them all.
    "pairs.num_candidates=160",
    "pairs.bce_threshold=5.5",
    "pairs.min_classes=1",
    # Stage 3: the tiny preset (4 epochs x 75 steps, lambda_sup 1 -> 0.38), with the content term
    # hDCE at CUT's PatchNCE weight: the pseudo pairs above teach colour, not layout.
    "translator.lambda_hdce=1.0",
    "translator.sample_every_steps=75",
)
PRIORS_RECORD = "priors.json"


def write_demo_priors(directory: Path) -> PriorsConfig:
    """Tiny random CLIP, LPIPS and Mask2Former under directory (once; a rerun reads the record)."""
    record = directory / PRIORS_RECORD
    if record.is_file():
        return PriorsConfig(**json.loads(record.read_text()))
    from scenimefy.demo.priors import tiny_priors_config

    priors = tiny_priors_config(directory)
    with atomic_path(record) as tmp:  # written last: the priors are complete
        Path(tmp).write_text(json.dumps(dataclasses.asdict(priors), indent=1))
    return priors


def make_output_dir(out: Path) -> Path:
    """Create the demo's folder; one it creates gets a `.gitignore` of `*`, so a demo run inside a git
    clone (the default `scenimefy-demo` lands in the current directory) leaves `git status` clean.
    A folder that exists already is used as it is."""
    if not out.exists():
        out.mkdir(parents=True)
        with atomic_path(out / ".gitignore") as tmp:
            Path(tmp).write_text("# written by `scenimefy demo`: everything here is generated\n*\n")
    return out


def run_demo(*, out_dir: str, overrides: list[str] | tuple[str, ...] = (), workers: int = 2) -> dict[str, str]:
    from scenimefy.distributed.pipeline import G_S, G_T, PAIRS_DIR, records_dir_of, run_pipeline
    from scenimefy.inference.translate import load_translator, translate_paths

    out = make_output_dir(Path(out_dir).absolute())
    started = time.perf_counter()

    # Data and priors: procedural scenes in two styles, tiny random priors.
    print(f"[demo] drawing demo data into {out / 'data'}", flush=True)
    data = write_demo_dataset(str(out / "data"), **DEMO_DATA)
    print(f"[demo] writing tiny random priors into {out / 'priors'}", flush=True)
    priors = write_demo_priors(out / "priors")

    # Stages 0-3 with the tiny preset on CPU.
    cfg = load_config(
        "tiny",
        [
            f"run.output_dir={out / 'runs'}",
            f"run.num_workers={workers}",
            f"data.photos={data['photos']}",
            f"data.anime={data['anime']}",
            *(f"priors.{k}={v}" for k, v in dataclasses.asdict(priors).items()),
            *DEMO_OVERRIDES,
            *overrides,
        ],
    )
    outcome = run_pipeline(cfg)

    # Translate the held-out photos and show before/after.
    generator = load_translator(outcome.generator, "cpu")
    translated = out / "translated"
    report = translate_paths(
        generator,
        [data["test"]],
        str(translated),
        batch_size=8,
        max_side=0,
        tile=0,
        tile_overlap=0,
        device="cpu",
        progress=False,
    )
    before = [np.asarray(load_image(p)) for p in list_image_files(data["test"])]
    after = [np.asarray(load_image(p)) for p in sorted(report.written)]
    grid = image_grid([before, after], row_labels=["photo", "anime"])
    grid_path = out / "before_after.png"
    save_image_atomic(str(grid_path), grid)

    written = {
        "data": str(out / "data"),
        "priors": str(out / "priors"),
        "run": outcome.run_dir,
        "G_s": outcome.outputs.get(G_S, ""),
        "G_t": outcome.outputs.get(G_T, ""),
        "pairs": outcome.outputs.get(PAIRS_DIR, ""),
        "generator": outcome.generator,
        "records": str(records_dir_of(cfg)),
        "translated": str(translated),
        "before_after": str(grid_path),
        "mlflow": f"{outcome.tracking_uri} (parent run {outcome.mlflow_run_id})",
    }
    print(f"[demo] finished in {time.perf_counter() - started:.0f} s; stages:", flush=True)
    for result in outcome.stages:
        print(
            f"  {result.stage}: "
            + (f"ran in {result.seconds:.0f} s" if result.action == "ran" else "skipped (finished earlier)"),
            flush=True,
        )
    print("[demo] wrote:", flush=True)
    for key, value in written.items():
        print(f"  {key}: {value}", flush=True)
    print(f"[demo] serve it in a web page: scenimefy serve --checkpoint {outcome.generator}", flush=True)
    return written
