"""The demo's output: a quiet terminal with the rest in a log file, the content measure, the pictures."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from scenimefy.evaluation.content import (
    gaussian_window,
    luminance,
    luminance_ssim,
    mean_luminance_ssim,
    ssim_map,
)

REPO = Path(__file__).resolve().parents[1]
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


# ----------------------------------------------------------------------------------------
# SSIM of the luminance


def test_ssim_of_two_flat_images_is_the_luminance_term_only():
    x, y = np.full((16, 16), 100.0), np.full((16, 16), 150.0)
    expected = (2 * 100 * 150 + C1) / (100**2 + 150**2 + C1)  # no variance: the structure term is C2 / C2
    assert ssim_map(x, y).shape == (6, 6)  # valid region of an 11 x 11 window
    assert np.allclose(ssim_map(x, y), expected)
    assert ssim_map(x, x).mean() == pytest.approx(1.0)


def test_ssim_of_one_window_matches_the_formula_by_hand():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (11, 11))
    y = 255 - x  # the same structure inverted: negative covariance
    w = np.outer(gaussian_window(), gaussian_window())
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy = (w * x * x).sum() - mx**2, (w * y * y).sum() - my**2
    cov = (w * x * y).sum() - mx * my
    expected = (2 * mx * my + C1) * (2 * cov + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2))
    assert expected < 0
    assert ssim_map(x, y).item() == pytest.approx(expected, rel=1e-12)


def test_gaussian_window_is_normalised_and_symmetric():
    g = gaussian_window(11, 1.5)
    assert g.sum() == pytest.approx(1.0) and np.allclose(g, g[::-1]) and g.argmax() == 5
    assert g[5] / g[6] == pytest.approx(np.exp(1 / (2 * 1.5**2)))


def test_luminance_is_bt601_luma():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 10, 10]]], np.uint8)
    assert np.allclose(luminance(rgb), [[0.299 * 255, 0.587 * 255, 0.114 * 255, 10.0]])


def test_luminance_ssim_keeps_structure_and_ignores_a_colour_change():
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    photo = np.stack([grey] * 3, axis=-1)
    recoloured = np.stack([grey, grey, grey // 2], axis=-1)  # a tint: the luma moves little, the structure stays
    noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert luminance_ssim(photo, photo) == pytest.approx(1.0)
    assert luminance_ssim(photo, recoloured) > 0.9
    assert abs(luminance_ssim(photo, noise)) < 0.1
    bigger = np.repeat(np.repeat(photo, 2, axis=0), 2, axis=1)  # compared at the translation's size
    assert luminance_ssim(bigger, photo) > 0.5
    assert mean_luminance_ssim([photo, photo], [photo, noise]) == pytest.approx(
        (1.0 + luminance_ssim(photo, noise)) / 2
    )


def test_ssim_refuses_mismatched_or_too_small_images():
    with pytest.raises(ValueError, match="one shape"):
        ssim_map(np.zeros((16, 16)), np.zeros((16, 17)))
    with pytest.raises(ValueError, match="at least 11"):
        ssim_map(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="matched"):
        mean_luminance_ssim([], [])


# ----------------------------------------------------------------------------------------
# Quiet runs


QUIET_SCRIPT = textwrap.dedent(
    """
    import logging, os, sys, warnings
    from scenimefy.distributed import logs

    with logs.quiet_run(sys.argv[1]) as path:
        print("[demo] ours", flush=True)
        os.write(2, b"E core_worker.cc: a C++ line\\n")
        print("a Python stderr line", file=sys.stderr)
        logging.getLogger("ray").warning("a Ray log record")
        warnings.warn("a library warning")
        logs._active.write_worker_batch(
            {"pid": 42, "actor_name": "RayTrainWorker", "is_err": False,
             "lines": ["[translator] epoch 1/4 step 25", "Wrapping provided model in DistributedDataParallel."]}
        )
        print("inside:", os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"), flush=True)
    print("after:", os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"), path.name, flush=True)
    print("stderr is back", file=sys.stderr, flush=True)
    """
)


def test_quiet_run_prints_our_lines_and_logs_the_rest(tmp_path):
    log = tmp_path / "logs" / "run.log"
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", QUIET_SCRIPT, str(log)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[demo] ours",
        "[translator] epoch 1/4 step 25",
        "inside: 1",
        "after: None run.log",
    ]
    assert done.stderr == "stderr is back\n"
    text = log.read_text()
    for line in (
        "E core_worker.cc: a C++ line",
        "a Python stderr line",
        "a Ray log record",
        "a library warning",
        "(RayTrainWorker pid=42) [translator] epoch 1/4 step 25",
        "(RayTrainWorker pid=42) Wrapping provided model in DistributedDataParallel.",
    ):
        assert line in text
    assert "[demo] ours" not in text


def test_verbose_changes_nothing(tmp_path):
    from scenimefy.distributed import logs

    with logs.quiet_run(tmp_path / "run.log", verbose=True) as path:
        assert path is None and logs.active_log_file() is None
    assert not (tmp_path / "run.log").exists()


def test_our_lines_are_the_tagged_ones():
    from scenimefy.distributed.logs import OUR_LINE

    for ours in ("[pretrain] kimg 0.2/0.8", "[pairs] seeds 0-160: kept 40/160", "[demo] finished in 300 s"):
        assert OUR_LINE.match(ours)
    for theirs in (
        "[2026-12-02 17:01:49,757 E 17193 17193] (gcs_server) gcs_actor_scheduler.cc:538: Failed to kill actor",
        "Traceback (most recent call last):",
        "INFO worker.py:2029 -- Started a local Ray instance.",
        "[Errno 2] no such file",
    ):
        assert not OUR_LINE.match(theirs)


def test_attach_to_ray_replaces_rays_printers_and_gives_them_back(tmp_path, capsys):
    """Ray's real dispatcher object and error printer (no cluster needed): inside a quiet run, forwarded
    worker lines and the cluster's messages go to the log file instead of Ray's printers, our tagged
    lines to stdout; afterwards Ray's error printer is back and our handler gone."""
    from ray._private import worker
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    from scenimefy.distributed import logs

    rays_print = worker.print_to_stdstream
    seen = []
    saved = list(dispatcher.handlers)
    dispatcher.add_handler(logs.RAY_PRINT_HANDLER, seen.append)
    try:
        with logs.quiet_run(tmp_path / "run.log"):
            assert logs.attach_to_ray()
            assert [n for n, _ in dispatcher.handlers].count(logs.RAY_PRINT_HANDLER) == 0
            batch = {"pid": 7, "task_name": "ListFiles", "is_err": True, "lines": ["InterruptedError", "[x] y"]}
            dispatcher.emit(batch)
            # what Ray's error listener prints without the dispatcher (raylet and GCS messages)
            worker.print_to_stdstream({"pid": "raylet", "is_err": False, "lines": ["WARNING: 8 workers"]}, False)
        assert logs.OUR_PRINT_HANDLER not in [n for n, _ in dispatcher.handlers]
        assert worker.print_to_stdstream is rays_print
    finally:
        dispatcher.handlers = saved
    assert seen == []
    assert capsys.readouterr().out == "[x] y\n"
    text = (tmp_path / "run.log").read_text()
    assert "(ListFiles pid=7) InterruptedError" in text and "(pid=raylet) WARNING: 8 workers" in text


# ----------------------------------------------------------------------------------------
# Pictures and the summary


def test_labelled_before_after_enlarges_tiles_and_labels_each_column():
    from scenimefy.demo.run import labelled_before_after

    rng = np.random.default_rng(2)
    photos = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    grid = labelled_before_after(photos, [p.copy() for p in photos], tile=192)
    assert grid.dtype == np.uint8 and grid.ndim == 3
    assert grid.shape[0] > 2 * 192 and grid.shape[1] > 3 * 192  # two rows, three columns of 192 px tiles
    with_tone = labelled_before_after(photos, [p.copy() for p in photos], [255 - p for p in photos], tile=192)
    assert with_tone.shape[0] > 3 * 192 and with_tone.shape[1] == grid.shape[1]  # a third row, same columns


def test_selection_counts_read_stage_2s_record():
    from scenimefy.demo.run import selection_counts

    record = {"facts": {"num_candidates": 160, "num_kept": 57, "inspection": "/r/pairs/inspection.png"}}
    assert selection_counts(record) == (160, 57, "/r/pairs/inspection.png")
    assert selection_counts(None) == (0, 0, "")


def test_stage_2_selects_with_the_demo_segmenter_and_its_measured_threshold(tmp_path, monkeypatch):
    """The demo hands stage 2 its trained Mask2Former and that model's threshold, keeps the paper's
    class rule, and lets the command line's overrides win (the pipeline itself is not run here)."""
    import scenimefy.demo.segmenter as segmenter
    import scenimefy.distributed.pipeline as pipeline
    from scenimefy.demo import run

    trained: list[tuple[Path, int]] = []

    def fake_write(directory, *, size):
        trained.append((Path(directory), size))
        return {"path": str(directory), "threshold": 4.3912345, "matching_median": 4.2, "shuffled_median": 4.3912345,
                "pixel_accuracy": 0.8}  # fmt: skip

    class Stop(Exception):
        pass

    seen = {}

    def capture(cfg, **kwargs):
        seen["cfg"] = cfg
        raise Stop

    monkeypatch.setattr(segmenter, "write_scene_segmenter", fake_write)
    monkeypatch.setattr(pipeline, "run_pipeline", capture)
    monkeypatch.setattr(run, "DEMO_DATA", {**run.DEMO_DATA, "n_photos": 2, "n_anime": 2, "n_test": 1})
    out = run.make_output_dir(tmp_path / "demo")
    with pytest.raises(Stop):
        run._run_demo_stages(out, [], 2, "")
    cfg = seen["cfg"]
    assert trained == [(out / "priors" / run.SEGMENTER_DIR, cfg.stylegan.size)]
    assert cfg.priors.mask2former == str(out / "priors" / run.SEGMENTER_DIR)
    assert cfg.pairs.bce_threshold == pytest.approx(4.3912, abs=1e-9) and cfg.pairs.min_classes == 2

    with pytest.raises(Stop):
        run._run_demo_stages(out, ["pairs.bce_threshold=4.5"], 2, "")
    assert seen["cfg"].pairs.bce_threshold == 4.5


def test_demo_options_parse_verbose_and_photos(tmp_path):
    from scenimefy.commands import demo
    from scenimefy.commands.options import OneLineParser

    p = OneLineParser(prog="scenimefy demo")
    demo.add_arguments(p)
    args = p.parse_args(["--out", str(tmp_path), "--verbose", "--photos", str(tmp_path)])
    assert args.verbose and args.photos == str(tmp_path)
    assert not p.parse_args([]).verbose


def test_demo_refuses_a_photos_path_that_is_not_a_folder(tmp_path):
    from scenimefy.demo.run import run_demo

    with pytest.raises(ValueError, match="--photos .*not a folder"):
        run_demo(out_dir=str(tmp_path / "demo"), photos=str(tmp_path / "missing"))


def test_ingest_options_carry_the_data_context_without_the_deprecated_option_and_keep_order():
    import warnings

    from ray.data import DataContext
    from ray.train import DataConfig

    from scenimefy.distributed.cluster import ingest_options

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = ingest_options()
        DataConfig.default_ingest_options()  # Ray Train's own default: passes exclude_resources
    messages = [str(w.message) for w in caught]
    current = DataContext.get_current().execution_options
    assert ours.resource_limits == current.resource_limits and ours.preserve_order
    assert sum("exclude_resources" in m for m in messages) == 1  # Ray's default warns, ours does not


RAY_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    import ray
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    from scenimefy.distributed import logs
    from scenimefy.distributed.cluster import init_ray

    arrived = threading.Event()
    with logs.quiet_run(sys.argv[1]):
        init_ray(num_cpus_needed=1)
        # after ours in the dispatcher: set once our handler has had the task's last line
        dispatcher.add_handler("test", lambda d: any("noise" in line for line in d["lines"]) and arrived.set())

        @ray.remote
        def task():
            import warnings
            print("[probe] ours, from a task", flush=True)
            warnings.warn("a warning from a task")
            print("noise from a task", flush=True)
            return 1

        assert ray.get(task.remote()) == 1
        assert arrived.wait(120), "the task's lines never reached the driver"
        ray.shutdown()
    print("done", flush=True)
    """
)


@pytest.mark.ray
def test_a_quiet_ray_run_prints_only_our_lines(tmp_path):
    """A real local Ray started by `init_ray` inside a quiet run: the driver's terminal gets the task's
    tagged line and nothing of Ray's; the log file gets Ray's start-up lines and the task's other output."""
    log = tmp_path / "logs" / "run.log"
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    done = subprocess.run(
        [sys.executable, "-c", RAY_SCRIPT, str(log)], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "[probe] ours, from a task\ndone\n"
    assert "Traceback" not in done.stderr
    text = log.read_text()
    assert "Started a local Ray instance" in text
    assert "noise from a task" in text and "a warning from a task" in text
