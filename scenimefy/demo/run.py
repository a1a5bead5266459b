"""`scenimefy demo`: the whole pipeline (stages 0 -> 3) on a fresh machine, with no data and no GPU.

Draws procedural photo and anime scenes (`scenimefy.demo.scenes`), writes tiny random
priors (`scenimefy.demo.priors`: CLIP and LPIPS for fine-tuning), trains a tiny Mask2Former on
the scenes' label maps for selection (`scenimefy.demo.segmenter`, about half a minute), then
runs `scenimefy.distributed.pipeline` on them with the `tiny` preset on CPU workers: a 32 px
StyleGAN2 pretrained on the photos (G_s), fine-tuned on the anime scenes (G_t), pseudo pairs
generated and selected, and the translator trained on photos, anime and the selected pairs. It then
translates the held-out photos and writes `before_after.png` (photos over translations and over
translations with the photo's tone kept, `scenimefy.inference.tone`; each column with its content
measures, the luminance SSIM of `scenimefy.evaluation.content`),
`kept_dropped.png` (stage 2's kept and dropped pairs with their scores) and, with `photos`, the
same grid for a folder of real photos. A rerun skips finished stages.

The terminal shows our own lines only (a few per stage, then the summary: stage times, kept and
dropped pairs, content kept); Ray's and the libraries' output goes to `logs/run.log`
(`scenimefy.distributed.logs.quiet_run`; `verbose` prints it instead).

Why the settings in DEMO_OVERRIDES (each also has its comment):
- A StyleGAN2 trained from scratch for a minute draws coloured blobs, not scenes, so the pseudo
  pairs carry a colour change (G_s: the photos' muted palette, G_t: the anime palette, sky blue
  over green) on a roughly shared layout, not content. 200 pretraining steps and 80 fine-tuning
  iterations are enough for that palette difference; 2,000 steps of batch 8 (16 kimg, over two
  minutes on 2 cores) only begin to draw a horizon.
- The supervised branch of stage 3 then teaches colour but blurs (lambda_sup decays only to
  0.38 over the tiny preset's 4 epochs). With the paper's lambda_hDCE = 0.1 every translation
  comes out as the same blurred anime palette, the layout of the photo lost; with 1.0, the
  weight CUT gives its PatchNCE content loss, horizons, ridges and lakes roughly keep their place.
- Batch 2 per worker: batch 1 for the same number of steps keeps less of the layout.
- The whole demo takes about 7 minutes on 2 idle CPU cores, most of it in stage 3 (README.md,
  "Quick start").
"""

from __future__ import annotations

import dataclasses
import json
import shutil
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
    # Stage 2: one candidate pair per photo, selected with the paper's rule (>= 2 classes, L_BCE
    # below a threshold) by the demo's own Mask2Former (scenimefy.demo.segmenter); the threshold
    # is that segmenter's, measured on procedural pairs (`pairs.bce_threshold`, set in run_demo).
    "pairs.num_candidates=160",
    # Stage 3: the tiny preset (4 epochs x 75 steps, lambda_sup 1 -> 0.38), with the content term
    # hDCE at CUT's PatchNCE weight: the pseudo pairs above teach colour, not layout.
    "translator.lambda_hdce=1.0",
    "translator.sample_every_steps=75",
    # A few progress lines per stage on the terminal (everything else goes to logs/run.log).
    "pretrain.log_every_kimg=0.2",
    "finetune.log_every_steps=40",
    "translator.log_every_steps=75",
)
PRIORS_RECORD = "priors.json"
SEGMENTER_DIR = "scene_segmenter"  # under <out>/priors: the demo's trained Mask2Former
LOG_FILE = "run.log"  # <out>/logs/: Ray's and the libraries' output (scenimefy.distributed.logs)
DEMO_KEEP_TONE = 1.0  # the last row of the before/after pictures: the photo's tone kept (inference.tone)
TILE = 192  # px: the longer side of each picture in the before/after grids
REAL_SIDE = 192  # px: real photos (--photos) are translated at this longer side (the demo trains at 64)
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")


def write_demo_priors(directory: Path) -> PriorsConfig:
    """Tiny random CLIP and LPIPS under directory (once; a rerun reads the record). The Mask2Former is
    the trained one of `write_demo_segmenter`."""
    record = directory / PRIORS_RECORD
    if record.is_file():
        return PriorsConfig(**json.loads(record.read_text()))
    from scenimefy.demo.priors import tiny_priors_config

    priors = tiny_priors_config(directory, mask2former=False)
    with atomic_path(record) as tmp:  # written last: the priors are complete
        Path(tmp).write_text(json.dumps(dataclasses.asdict(priors), indent=1))
    return priors


def write_demo_segmenter(directory: Path, size: int) -> dict:
    """The demo's Mask2Former, trained on the procedural scenes at the pairs' size `size` (once; a
    rerun reuses it): its record (path, selection threshold, pixel accuracy)."""
    from scenimefy.demo.segmenter import write_scene_segmenter

    return write_scene_segmenter(directory / SEGMENTER_DIR, size=size)


def make_output_dir(out: Path) -> Path:
    """Create the demo's folder; one it creates gets a `.gitignore` of `*`, so a demo run inside a git
    clone (the default `scenimefy-demo` lands in the current directory) leaves `git status` clean.
    A folder that exists already is used as it is."""
    if not out.exists():
        out.mkdir(parents=True)
        with atomic_path(out / ".gitignore") as tmp:
            Path(tmp).write_text("# written by `scenimefy demo`: everything here is generated\n*\n")
    return out


def labelled_before_after(
    photos: list[np.ndarray],
    translated: list[np.ndarray],
    tone_kept: list[np.ndarray] | None = None,
    tile: int = TILE,
) -> np.ndarray:
    """Photos over their translations (and, with `tone_kept`, over the translations with the photo's
    tone kept, `scenimefy.inference.tone`), each enlarged (nearest) to at least `tile` px on its longer
    side, the rows labelled, each column with its content measure per translation row (SSIM of the
    luminance, `scenimefy.evaluation.content`)."""
    from scenimefy.evaluation.content import luminance_ssim

    rows = [translated] if tone_kept is None else [translated, tone_kept]
    scores = [[luminance_ssim(p, t) for p, t in zip(photos, row)] for row in rows]

    def enlarged(a: np.ndarray) -> np.ndarray:
        k = max(1, tile // max(a.shape[:2]))
        return np.repeat(np.repeat(a, k, axis=0), k, axis=1)

    photos = [enlarged(np.asarray(_at_size(p, t.shape[:2]))) for p, t in zip(photos, translated)]
    return image_grid(
        [photos, *([enlarged(t) for t in row] for row in rows)],
        row_labels=["photo", "anime (ours)", "tone kept"][: 1 + len(rows)],
        col_labels=["SSIM " + " / ".join(f"{v:.2f}" for v in column) for column in zip(*scores)],
    )


def _at_size(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if image.shape[:2] == shape:
        return image
    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.BICUBIC))


def translate_for_grid(
    generator, inputs: str, out: Path, *, max_side: int, keep_tone: float = 0.0
) -> tuple[list, list]:
    """Translate the images of folder `inputs` into `out`; the (photo, translation) arrays matched by name."""
    from scenimefy.inference.translate import translate_paths

    report = translate_paths(
        generator, [inputs], str(out), batch_size=8, max_side=max_side, tile=0, tile_overlap=0, device="cpu",
        progress=False, exclude_extensions=VIDEO_EXTENSIONS, keep_tone=keep_tone,
    )  # fmt: skip
    by_stem = {Path(w).stem: w for w in report.written}
    photos, translated = [], []
    for path in list_image_files(inputs):
        if Path(path).stem in by_stem:
            photos.append(np.asarray(load_image(path)))
            translated.append(np.asarray(load_image(by_stem[Path(path).stem])))
    return photos, translated


def copy_file_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def selection_counts(record: dict | None) -> tuple[int, int, str]:
    """(candidates, kept, inspection picture) from stage 2's completion record (zeros when absent)."""
    facts = (record or {}).get("facts", {})
    return int(facts.get("num_candidates", 0)), int(facts.get("num_kept", 0)), str(facts.get("inspection", ""))


def run_demo(
    *,
    out_dir: str,
    overrides: list[str] | tuple[str, ...] = (),
    workers: int = 2,
    verbose: bool = False,
    photos: str = "",
) -> dict[str, str]:
    """The demo (module docstring); `photos` (a folder of real photos, optional) are translated too.
    Without `verbose`, Ray's and the libraries' output goes to `<out>/logs/run.log` (`quiet_run`)."""
    from scenimefy.distributed.logs import quiet_run

    out = make_output_dir(Path(out_dir).absolute())
    if photos and not Path(photos).is_dir():
        raise ValueError(f"--photos {photos}: not a folder; give a folder of photos to translate, or leave it out")
    started = time.perf_counter()
    with quiet_run(out / "logs" / LOG_FILE, verbose=verbose) as log_file:
        if log_file is not None:
            print(f"[demo] Ray's and the libraries' output goes to {log_file} (--verbose prints it)", flush=True)
        written, summary = _run_demo_stages(out, overrides, workers, photos)
        _disconnect_ray()  # now, while Ray's shutdown lines still go to the log file
    print(f"[demo] finished in {time.perf_counter() - started:.0f} s", flush=True)
    for line in summary:
        print(line, flush=True)
    if log_file is not None:
        written["log"] = str(log_file)
    return written


def _disconnect_ray() -> None:
    import sys

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


def _run_demo_stages(out: Path, overrides, workers: int, photos: str) -> tuple[dict[str, str], list[str]]:
    from scenimefy.distributed.pipeline import G_S, G_T, PAIRS, PAIRS_DIR, read_record, records_dir_of, run_pipeline
    from scenimefy.inference.translate import load_translator

    # Data and priors: procedural scenes in two styles, tiny priors.
    print(f"[demo] drawing demo data into {out / 'data'}", flush=True)
    data = write_demo_dataset(str(out / "data"), **DEMO_DATA)
    print(f"[demo] writing tiny random priors into {out / 'priors'}", flush=True)
    priors = write_demo_priors(out / "priors")
    settings = [
        f"run.output_dir={out / 'runs'}",
        f"run.num_workers={workers}",
        f"data.photos={data['photos']}",
        f"data.anime={data['anime']}",
        *(f"priors.{k}={v}" for k, v in dataclasses.asdict(priors).items()),
        *DEMO_OVERRIDES,
    ]
    pair_size = load_config("tiny", [*settings, *overrides]).stylegan.size
    print(f"[demo] training the demo's Mask2Former on the scenes' label maps ({pair_size} px)", flush=True)
    segmenter = write_demo_segmenter(out / "priors", pair_size)
    print(
        f"[demo] Mask2Former: {segmenter['pixel_accuracy']:.0%} pixel accuracy; L_BCE of matching pairs "
        f"{segmenter['matching_median']:.2f}, of unrelated scenes {segmenter['shuffled_median']:.2f} (threshold)",
        flush=True,
    )
    # Stages 0-3 with the tiny preset on CPU; the command line's overrides come last and win.
    selection = [f"priors.mask2former={segmenter['path']}", f"pairs.bce_threshold={segmenter['threshold']:.4f}"]
    cfg = load_config("tiny", [*settings, *selection, *overrides])
    outcome = run_pipeline(cfg)

    # Translate the held-out photos (and the real ones) and show before/after.
    generator = load_translator(outcome.generator, "cpu")
    from scenimefy.evaluation.content import mean_luminance_ssim

    test_photos, test_translated = translate_for_grid(generator, data["test"], out / "translated", max_side=0)
    _, test_toned = translate_for_grid(
        generator, data["test"], out / "translated_tone_kept", max_side=0, keep_tone=DEMO_KEEP_TONE
    )
    grid_path = out / "before_after.png"
    save_image_atomic(str(grid_path), labelled_before_after(test_photos, test_translated, test_toned))
    content = (mean_luminance_ssim(test_photos, test_translated), mean_luminance_ssim(test_photos, test_toned))
    times = [f"{r.stage} {r.seconds:.0f} s" if r.action == "ran" else f"{r.stage} skipped (finished earlier)"
             for r in outcome.stages]  # fmt: skip
    lines = [f"  stages: {', '.join(times)}"]
    candidates, kept, inspection = selection_counts(read_record(cfg, PAIRS))
    kept_dropped = out / "kept_dropped.png"
    if inspection and Path(inspection).is_file():
        copy_file_atomic(Path(inspection), kept_dropped)
    lines.append(
        f"[demo] stage 2 kept {kept} and dropped {candidates - kept} of {candidates} candidate pairs "
        f"(L_BCE < {cfg.pairs.bce_threshold:g}, >= {cfg.pairs.min_classes} classes): {kept_dropped.name}"
    )
    lines.append(
        f"[demo] content kept (luminance SSIM, photo vs translation, 1 = same structure), mean of {len(test_photos)} "
        f"test scenes: {content[0]:.3f}, {content[1]:.3f} with the photo's tone kept "
        f"(translate.keep_tone={DEMO_KEEP_TONE:g}): {grid_path.name}"
    )
    written = {
        "data": str(out / "data"),
        "run": outcome.run_dir,
        "G_s": outcome.outputs.get(G_S, ""),
        "G_t": outcome.outputs.get(G_T, ""),
        "pairs": outcome.outputs.get(PAIRS_DIR, ""),
        "generator": outcome.generator,
        "records": str(records_dir_of(cfg)),
        "before_after": str(grid_path),
        "kept_dropped": str(kept_dropped),
        "mlflow": f"{outcome.tracking_uri} (parent run {outcome.mlflow_run_id})",
    }
    if photos:
        real, real_translated = translate_for_grid(generator, photos, out / "translated_photos", max_side=REAL_SIDE)
        _, real_toned = translate_for_grid(
            generator, photos, out / "translated_photos_tone_kept", max_side=REAL_SIDE, keep_tone=DEMO_KEEP_TONE
        )
        if real:
            real_path = out / "before_after_photos.png"
            save_image_atomic(str(real_path), labelled_before_after(real, real_translated, real_toned))
            lines.append(
                f"[demo] content kept on {len(real)} real photos ({REAL_SIDE} px): "
                f"{mean_luminance_ssim(real, real_translated):.3f}, {mean_luminance_ssim(real, real_toned):.3f} "
                f"with the photo's tone kept: {real_path.name}"
            )
            written["before_after_photos"] = str(real_path)
    lines.append(
        f"[demo] pictures and outputs in {out}; serve it: scenimefy serve --checkpoint {outcome.generator} "
        f"--set serve.keep_tone={DEMO_KEEP_TONE:g}"
    )
    return written, lines
