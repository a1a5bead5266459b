"""Quiet output for every workload: our lines on the terminal, Ray's and the libraries' in <run folder>/logs/run.log.

The unit tests drive the job entry with a stand-in workload (no Ray) and the deferred log file of
`quiet_run`; one Ray test runs a tiny `python jobs/train.py` end to end and reads its terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from stage_recorder import TINY_TRANSLATOR

from scenimefy.commands import cli, jobs_runner
from scenimefy.distributed import logs
from scenimefy.distributed.logs import OUR_LINE

REPO = Path(__file__).resolve().parents[1]
QUIET_WORKLOADS = [name for name in jobs_runner.WORKLOADS if name != "demo"]
SUMMARY = ("generator: ", "checkpoint: ", "mlflow: ")  # the train command's summary lines, printed on purpose


def _tiny(tmp_path: Path, *extra: str) -> list[str]:
    return ["--config", "tiny", f"run.output_dir={tmp_path / 'runs'}", "run.name=q", *extra]


# ----------------------------------------------------------------------------------------
# Where the log goes


def test_every_workload_but_the_demo_takes_verbose():
    for name in QUIET_WORKLOADS:
        args = jobs_runner.parse_job_args(name, _workload_args(name, Path("/r")) + ["--verbose"])
        assert args.verbose, name
        assert not jobs_runner.parse_job_args(name, _workload_args(name, Path("/r"))).verbose
    assert jobs_runner.WORKLOADS["demo"].run_folder is None  # the demo runs its own quiet run


def _workload_args(name: str, d: Path) -> list[str]:
    extra = {"evaluate": ["--translations", str(d / "t"), "--out", str(d / "eval")]}.get(name, [])
    return _tiny(d, *extra)


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("train", "runs/q"),
        ("pretrain", "runs/q"),
        ("finetune", "runs/q"),
        ("pairs", "runs/q"),
        ("pipeline", "runs/q"),
        ("tune", "runs/sweep-1"),
        ("evaluate", "eval"),
    ],
)
def test_the_log_file_is_in_the_run_folder(name, folder, tmp_path, monkeypatch):
    monkeypatch.delenv(jobs_runner.RAY_JOB_DRIVER_ENV, raising=False)
    argv = _workload_args(name, tmp_path) + (["tune.name=sweep-1"] if name == "tune" else [])
    args = jobs_runner.parse_job_args(name, argv)
    cfg = jobs_runner.resolve_config(name, args)
    assert jobs_runner.log_file_of(name, cfg, args) == tmp_path / folder / "logs" / "run.log"
    verbose = jobs_runner.parse_job_args(name, [*argv, "--verbose"])
    assert jobs_runner.log_file_of(name, cfg, verbose) is None


def test_a_ray_job_driver_keeps_everything_in_the_job_logs(tmp_path, monkeypatch):
    args = jobs_runner.parse_job_args("train", _tiny(tmp_path))
    cfg = jobs_runner.resolve_config("train", args)
    assert jobs_runner.log_file_of("train", cfg, args) is not None
    monkeypatch.setenv(jobs_runner.RAY_JOB_DRIVER_ENV, '{"runtime_env": {}}')  # what Ray's job supervisor sets
    assert jobs_runner.in_ray_job() and jobs_runner.log_file_of("train", cfg, args) is None


def test_a_dry_run_says_where_the_output_goes_and_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(jobs_runner.RAY_JOB_DRIVER_ENV, raising=False)
    assert cli.main(["train", *_tiny(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"# Ray's and the libraries' output: {tmp_path / 'runs' / 'q' / 'logs' / 'run.log'}\n" in out
    assert cli.main(["train", *_tiny(tmp_path), "--dry-run", "--verbose"]) == 0
    assert "# Ray's and the libraries' output: the terminal (--verbose)\n" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------------------
# The job entry with a stand-in workload (no Ray)


@pytest.fixture
def noisy_train(monkeypatch):
    """`train` replaced by a run that prints one line of ours and writes a library's line to standard error
    (the file descriptor, as Ray's C++ core does); it fails with `fail` when that is set."""
    state = {"fail": None}

    def run(cfg, args):
        print("[translator] epoch 1/1 step 2", flush=True)
        os.write(2, b"INFO a library's line\n")
        if state["fail"] is not None:
            raise state["fail"]
        print("generator: g.pt", flush=True)
        return {"generator": "g.pt"}

    monkeypatch.setattr(jobs_runner.WORKLOADS["train"].command, "run", run)
    monkeypatch.delenv(jobs_runner.RAY_JOB_DRIVER_ENV, raising=False)
    return state


def test_a_quiet_run_prints_our_lines_and_logs_the_rest(tmp_path, capfd, noisy_train):
    assert jobs_runner.main("train", _tiny(tmp_path)) == 0
    out, err = capfd.readouterr()
    log = tmp_path / "runs" / "q" / "logs" / "run.log"
    lines = out.splitlines()
    assert lines[:2] == ["[translator] epoch 1/1 step 2", "generator: g.pt"]
    # no Ray started: the log file is made when the run has succeeded, and the line says where it is
    assert lines[2] == f"[train] Ray's and the libraries' output goes to {log} (--verbose prints it)"
    assert OUR_LINE.match(lines[3]) and lines[3].startswith("[train] finished in ")
    assert jobs_runner.parse_result(out) == {"workload": "train", "generator": "g.pt"}
    assert lines[-1].startswith(jobs_runner.RESULT_PREFIX) and len(lines) == 5
    assert err == ""
    assert log.read_text() == "INFO a library's line\n"


def test_verbose_prints_everything_and_writes_no_log_file(tmp_path, capfd, noisy_train):
    assert jobs_runner.main("train", [*_tiny(tmp_path), "--verbose"]) == 0
    out, err = capfd.readouterr()
    assert err == "INFO a library's line\n"
    assert out.splitlines()[:2] == ["[translator] epoch 1/1 step 2", "generator: g.pt"]
    assert not (tmp_path / "runs").exists()


def test_a_run_refused_by_its_checks_creates_nothing_and_prints_one_line(tmp_path, capfd, noisy_train):
    noisy_train["fail"] = ValueError("data.photos=/nope: no such folder; give a folder of photos")
    assert jobs_runner.main("train", _tiny(tmp_path)) == 2
    out, err = capfd.readouterr()
    assert out == "[translator] epoch 1/1 step 2\n"  # no line about a log file that was never made
    # what the run wrote to standard error before it was refused reaches the terminal, then the one line
    assert (
        err
        == "INFO a library's line\njobs/train.py: error: data.photos=/nope: no such folder; give a folder of photos\n"
    )
    assert not (tmp_path / "runs").exists()


def test_a_bug_shows_its_traceback_on_the_terminal(tmp_path, noisy_train):
    script = (
        "import sys; from scenimefy.commands import jobs_runner\n"
        "def run(cfg, args): raise RuntimeError('a bug')\n"
        "jobs_runner.WORKLOADS['train'].command.run = run\n"
        "sys.exit(jobs_runner.main('train', sys.argv[1:]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != jobs_runner.RAY_JOB_DRIVER_ENV}
    done = subprocess.run(
        [sys.executable, "-c", script, *_tiny(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "RuntimeError: a bug" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_still_prints_the_interrupted_line(tmp_path, capfd, noisy_train):
    noisy_train["fail"] = KeyboardInterrupt()
    assert jobs_runner.main("train", _tiny(tmp_path)) == 130
    err = capfd.readouterr().err
    assert err.splitlines()[-1].startswith("jobs/train.py: interrupted; saved: no checkpoint yet")


def test_a_config_error_creates_no_run_folder(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv(jobs_runner.RAY_JOB_DRIVER_ENV, raising=False)
    assert cli.main(["train", *_tiny(tmp_path), "translator.lr=-1"]) == 2
    out, err = capfd.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "translator.lr" in err
    assert cli.main(["train", *_tiny(tmp_path), f"data.photos={tmp_path / 'nope'}"]) == 2  # the driver's check
    assert len(capfd.readouterr().err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_gpu_run_on_a_machine_without_gpus_is_refused_without_starting_ray(tmp_path, capfd, monkeypatch):
    import ray
    import torch

    monkeypatch.delenv(jobs_runner.RAY_JOB_DRIVER_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert not ray.is_initialized()
    assert cli.main(["train", *_tiny(tmp_path), "run.use_gpu=true", "run.num_workers=2"]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err.startswith("scenimefy train: error: train with run.use_gpu=true needs 2 GPU(s)")
    assert len(err.splitlines()) == 1
    assert not ray.is_initialized() and not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------------------
# The deferred log file of quiet_run


def test_a_deferred_log_file_is_made_when_ray_starts_with_what_came_before(tmp_path, capfd):
    log = tmp_path / "run" / "logs" / "run.log"
    opened = []
    with logs.quiet_run(log, defer=True, on_open=opened.append) as path:
        assert path == log
        os.write(2, b"before Ray\n")
        with logs.log_file_waits():
            logs.attach_to_ray()  # a check that starts Ray: the file still waits
        assert not log.parent.exists() and opened == []
        logs.attach_to_ray()  # what `init_ray` calls once Ray runs
        assert log.is_file() and opened == [log]
        os.write(2, b"after Ray\n")
        logs._active.write_worker_batch({"pid": 3, "lines": ["[translator] ours", "theirs"]})
    assert opened == [log]
    assert log.read_text() == "before Ray\nafter Ray\n(pid=3) [translator] ours\n(pid=3) theirs\n"
    out, err = capfd.readouterr()
    assert out == "[translator] ours\n" and err == ""


def test_checks_passed_makes_the_deferred_log_file_before_ray_starts(tmp_path, capfd):
    """The pipeline prints its plan once its checks passed, before Ray starts: the file is made then, so the
    line saying where it is comes before the plan."""
    from scenimefy.commands.pipeline import _after_the_checks

    logs.checks_passed()  # outside a quiet run: nothing to do
    log = tmp_path / "logs" / "run.log"
    with logs.quiet_run(log, defer=True, on_open=lambda p: print(f"[pipeline] log: {p}", flush=True)):
        os.write(2, b"MLflow's line\n")
        _after_the_checks("[pipeline] plan: train")
        assert log.read_text() == "MLflow's line\n"
        _after_the_checks("[pipeline] train: running")
    assert capfd.readouterr().out == f"[pipeline] log: {log}\n[pipeline] plan: train\n[pipeline] train: running\n"


def test_a_deferred_log_file_is_not_made_when_the_block_fails_first(tmp_path, capfd):
    log = tmp_path / "run" / "logs" / "run.log"
    with pytest.raises(ValueError, match="refused"):
        with logs.quiet_run(log, defer=True, on_open=lambda p: pytest.fail("opened")):
            os.write(2, b"a warning\n")
            raise ValueError("refused")
    assert not (tmp_path / "run").exists()
    assert capfd.readouterr().err == "a warning\n"
    assert logs.active_log_file() is None


TAGGED_STDERR_SCRIPT = """
import sys
from scenimefy.distributed import logs

with logs.quiet_run(sys.argv[1]):
    taken = sys.stderr
    print("[mlflow] warning: the tracking server is unreachable; metrics are buffered", file=sys.stderr)
    sys.stderr.write("a library's ")
    sys.stderr.write("warning\\n[pairs] a tagged line written in ")
    sys.stderr.write("pieces\\n")
print("after the run", file=taken, flush=True)
"""


def test_a_tagged_warning_on_sys_stderr_reaches_the_terminal_and_the_log(tmp_path):
    """A driver-side warning of ours (the MLflow tracker's) is printed to sys.stderr: it must not vanish
    into the log file. Untagged lines go to the log only; a handler that took sys.stderr meanwhile
    prints to the terminal again after the run."""
    log = tmp_path / "run.log"
    done = subprocess.run(
        [sys.executable, "-c", TAGGED_STDERR_SCRIPT, str(log)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == (
        "[mlflow] warning: the tracking server is unreachable; metrics are buffered\n"
        "[pairs] a tagged line written in pieces\n"
        "after the run\n"
    )
    assert log.read_text() == (
        "[mlflow] warning: the tracking server is unreachable; metrics are buffered\n"
        "a library's warning\n[pairs] a tagged line written in pieces\n"
    )


# ----------------------------------------------------------------------------------------
# One real run on Ray


@pytest.mark.ray
def test_a_tiny_train_run_prints_only_our_lines(tmp_path):
    """`python jobs/train.py` on a local Ray: the terminal has only our lines and the summary, nothing of
    Ray's, no traceback; the log file in the run folder holds Ray's lines."""
    from scenimefy.demo.scenes import write_demo_dataset

    data = write_demo_dataset(str(tmp_path / "data"), n_photos=4, n_anime=4, n_pairs=4, n_test=0, size=36, seed=0)
    argv = [
        *_tiny(tmp_path),
        *TINY_TRANSLATOR,
        "translator.n_epochs_decay=0",
        f"data.photos={data['photos']}",
        f"data.anime={data['anime']}",
        f"data.pairs={data['pairs']}",
    ]
    env = {k: v for k, v in os.environ.items() if k != jobs_runner.RAY_JOB_DRIVER_ENV}
    done = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "train.py"), *argv],
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = tmp_path / "runs" / "q" / "logs" / "run.log"
    lines = done.stdout.splitlines()
    assert lines[0] == f"[train] Ray's and the libraries' output goes to {log} (--verbose prints it)"
    assert lines[-1].startswith(jobs_runner.RESULT_PREFIX)
    assert jobs_runner.parse_result(done.stdout)["step"] == 2
    others = [line for line in lines[:-1] if not OUR_LINE.match(line)]
    assert [line.split(": ")[0] + ": " for line in others] == list(SUMMARY), done.stdout
    assert any(line.startswith("[translator] epoch 1/1 step 2") for line in lines), done.stdout
    assert lines[-2].startswith("[train] finished in ")
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr == ""
    text = log.read_text()
    assert "Started a local Ray instance" in text and "RayTrainWorker" in text
