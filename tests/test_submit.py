"""`scenimefy submit` / `scenimefy jobs` and the workload entry: the job spec, bad input, a real head."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scenimefy.commands import cluster as cc
from scenimefy.commands.jobs_runner import (
    RESULT_PREFIX,
    WORKLOADS,
    NotEnoughGpus,
    Workload,
    WorkloadUnavailable,
    check_available,
    check_gpus,
    parse_job_args,
    parse_result,
    resolve_config,
)
from scenimefy.commands.jobs_runner import (
    main as job_main,
)

REPO = Path(__file__).resolve().parents[1]


def _submit_args(*argv: str):
    import argparse

    parser = argparse.ArgumentParser()
    cc.add_cluster_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["submit", *argv])


# ----------------------------------------------------------------------------------------
# The job spec


def test_submit_builds_entrypoint_and_runtime_env(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    args = _submit_args(
        "--pip", "lpips==0.1.4", "--env", "FOO=bar", "--submission-id", "s-1",
        "train", "--config", "tiny", "run.name=my run", "translator.lr=0.001", "run.output_dir=/shared/runs",
    )  # fmt: skip
    job = cc.build_job(args)["job"]
    assert (
        job["entrypoint"]
        == "python jobs/train.py --config tiny 'run.name=my run' translator.lr=0.001 run.output_dir=/shared/runs"
    )
    env = job["runtime_env"]
    assert env["working_dir"] == str(REPO)
    assert env["pip"] == ["lpips==0.1.4"]
    assert env["env_vars"] == {
        "MLFLOW_TRACKING_URI": "http://mlflow.example:5000",
        "FOO": "bar",
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    }
    assert "/runs" in env["excludes"] and "/mlruns" in env["excludes"]
    assert job["submission_id"] == "s-1" and job["metadata"] == {"scenimefy.workload": "train"}


def test_allow_autoscale_reaches_the_job_and_lengthens_the_worker_start_timeout(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    job = cc.build_job(
        _submit_args("--allow-autoscale", "train", "--config", "rtx3090", "run.output_dir=/shared/runs")
    )["job"]
    assert job["entrypoint"].endswith("--allow-autoscale")
    assert job["runtime_env"]["env_vars"]["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] == str(cc.AUTOSCALE_START_TIMEOUT_S)


def test_submit_dry_run_prints_the_spec_without_a_cluster(capsys):
    assert (
        cc.main(
            [
                "submit",
                "--dry-run",
                "--address",
                "http://127.0.0.1:9",
                "train",
                "--config",
                "tiny",
                "run.output_dir=/shared/runs",
            ]
        )
        == 0
    )
    spec = json.loads(capsys.readouterr().out)
    assert spec["entrypoint"] == "python jobs/train.py --config tiny run.output_dir=/shared/runs"


def test_config_file_is_resolved_inside_the_working_dir(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "scenimefy").mkdir()
    (tmp_path / "jobs" / "train.py").write_text("")
    (tmp_path / "my.yaml").write_text("run:\n  name: from-file\n  output_dir: /shared/runs\n")
    built = cc.build_job(_submit_args("--working-dir", str(tmp_path), "train", "--config", "my.yaml"))
    assert built["config"].run.name == "from-file"
    assert built["job"]["runtime_env"]["working_dir"] == str(tmp_path)


# ----------------------------------------------------------------------------------------
# Bad input: one line, exit 2, before anything is submitted


def test_missing_config_file_is_refused(capsys):
    assert cc.main(["submit", "--address", "http://127.0.0.1:9", "train", "--config", "configs/nope.yaml"]) == 2
    err = capsys.readouterr().err
    assert "config file" in err and "nope.yaml" in err and "does not exist" in err and "--working-dir" in err


def test_relative_output_dir_is_refused(capsys):
    assert cc.main(["submit", "--address", "http://127.0.0.1:9", "train", "--config", "tiny"]) == 2
    assert "run.output_dir=runs is relative" in capsys.readouterr().err
    assert cc.main(["submit", "--address", "http://127.0.0.1:9", "demo", "--out", "demo-out"]) == 2
    assert "--out=demo-out is relative" in capsys.readouterr().err
    evaluate = ["evaluate", "--config", "tiny", "--translations", "t", "run.output_dir=/shared/runs", "--out", "ev"]
    assert cc.main(["submit", "--address", "http://127.0.0.1:9", *evaluate]) == 2
    assert "--out=ev is relative" in capsys.readouterr().err


def test_unknown_preset_and_unknown_key_are_refused(capsys):
    assert cc.main(["submit", "train", "--config", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert cc.main(["submit", "train", "--config", "tiny", "translator.lamda_src=1"]) == 2
    assert "unknown config key 'translator.lamda_src'" in capsys.readouterr().err


def test_unknown_job_option_is_refused(capsys):
    assert cc.main(["submit", "train", "--config", "tiny", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_unreachable_address_fails_within_seconds(capsys):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    assert (
        cc.main(
            ["submit", "--address", f"http://127.0.0.1:{port}", "train", "--config", "tiny", "run.output_dir=/tmp/r"]
        )
        == 2
    )
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert f"cannot reach the Ray dashboard at http://127.0.0.1:{port}" in err


def test_silent_address_times_out_with_a_message(monkeypatch):
    def silent(address, timeout):
        raise socket.timeout("timed out")

    monkeypatch.setattr(cc.socket, "create_connection", silent)
    with pytest.raises(cc.ClusterError, match=r"no answer within 5 s.*port-forward"):
        cc.connect("http://10.255.255.1:8265")


def test_port_that_never_answers_http_fails_within_seconds(monkeypatch):
    monkeypatch.setattr(cc, "CONNECT_TIMEOUT_S", 1.0)
    with socket.socket() as s:  # accepts TCP (listen backlog), never speaks HTTP
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        started = time.monotonic()
        with pytest.raises(cc.ClusterError, match="gave no HTTP answer within 1 s"):
            cc.check_reachable(f"http://127.0.0.1:{s.getsockname()[1]}", timeout_s=1.0)
        assert time.monotonic() - started < 5


def test_http_server_that_is_not_ray_is_explained():
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # 501 to every GET
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(cc.ClusterError, match="answered, but not as a Ray dashboard"):
            cc.connect(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "address, message",
    [("127.0.0.1:6379", "names the GCS port"), ("ray://127.0.0.1:10001", "expected the dashboard URL")],
)
def test_wrong_kind_of_address_is_explained(address, message):
    with pytest.raises(cc.ClusterError, match=message):
        cc.resolve_address(address)


def test_address_defaults(monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # a GCS address is not a dashboard: ignored
    assert cc.resolve_address(None) == cc.DEFAULT_ADDRESS
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265/")
    assert cc.resolve_address(None) == "http://head:8265"
    assert cc.resolve_address("head:8265") == "http://head:8265"


def test_gpu_preset_on_a_cluster_without_gpus_is_refused():
    cfg = resolve_config("train", parse_job_args("train", ["--config", "rtx3090", "run.num_workers=2"]))
    with pytest.raises(NotEnoughGpus, match=r"needs 2 GPU\(s\).*has 0.*--allow-autoscale"):
        check_gpus("train", cfg, 0, allow_autoscale=False)
    with pytest.raises(NotEnoughGpus):
        check_gpus("train", cfg, 1, allow_autoscale=False)
    check_gpus("train", cfg, 2, allow_autoscale=False)
    check_gpus("train", cfg, 0, allow_autoscale=True)
    cpu = resolve_config("train", parse_job_args("train", ["--config", "tiny"]))
    check_gpus("train", cpu, 0, allow_autoscale=False)


def test_workload_whose_module_is_missing_names_it(monkeypatch):
    from types import ModuleType

    from scenimefy.commands.options import add_workload_options

    command = ModuleType("ghost")
    command.HELP = "not written yet"
    command.add_arguments = lambda p: add_workload_options(p, "x=1")
    command.run = lambda cfg, args: None
    monkeypatch.setitem(WORKLOADS, "ghost", Workload(command, "scenimefy.distributed.ghost", lambda c: 0))
    with pytest.raises(
        WorkloadUnavailable, match=r"needs the module scenimefy.distributed.ghost.*available now: .*train"
    ):
        check_available("ghost")
    assert job_main("ghost", ["--config", "tiny"]) == 2


def test_every_workload_has_an_entrypoint_file():
    for name in WORKLOADS:
        text = (REPO / "jobs" / f"{name}.py").read_text()
        assert f'main("{name}")' in text


def test_job_dry_run_and_result_line(capsys):
    assert job_main("train", ["--config", "tiny", "run.num_workers=3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# workload: train" in out and "# world size: 3" in out
    logs = f"noise\n{RESULT_PREFIX}{json.dumps({'step': 1})}\nmore\n{RESULT_PREFIX}{json.dumps({'step': 2})}\n"
    assert parse_result(logs) == {"step": 2} and parse_result("nothing") is None


# ----------------------------------------------------------------------------------------
# Against a real head on loopback (2 CPUs, no GPU)


@pytest.fixture(scope="module")
def head():
    import tempfile

    from ray_head import RayHead

    root = Path(tempfile.mkdtemp(prefix="sst", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    h = RayHead(root, num_cpus=2)
    try:
        h.start()
        yield h
    finally:
        h.stop()
        leftovers = h.alive_pids()
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        assert leftovers == [], f"processes of the test cluster still running: {leftovers}"


@pytest.fixture(scope="module")
def client(head):
    return cc.connect(head.address)


@pytest.mark.ray
def test_gpu_preset_is_refused_before_submission(head, client, capsys):
    before = len(client.list_jobs())
    assert cc.main(["submit", "--address", head.address, "train", "--config", "rtx3090", "run.output_dir=/tmp/r"]) == 2
    err = capsys.readouterr().err
    assert f"the cluster at {head.address} has 0" in err and "needs 1 GPU(s)" in err
    assert len(client.list_jobs()) == before  # nothing was submitted


@pytest.mark.ray
def test_submit_waits_and_reports_success(head, client, capsys):
    code = cc.main(
        [
            "submit",
            "--address",
            head.address,
            "--submission-id",
            "dry-ok",
            "train",
            "--config",
            "tiny",
            "run.output_dir=/tmp/r",
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "submitted job dry-ok" in out and "job dry-ok SUCCEEDED" in out
    assert "# workload: train" in client.get_job_logs("dry-ok")  # the job ran jobs/train.py in the uploaded checkout

    assert cc.main(["jobs", "list", "--address", head.address]) == 0
    listing = capsys.readouterr().out
    assert (
        "dry-ok" in listing
        and "SUCCEEDED" in listing
        and "python jobs/train.py --config tiny run.output_dir=/tmp/r --dry-run" in listing
    )
    assert cc.main(["jobs", "logs", "dry-ok", "--address", head.address]) == 0
    assert "# world size: 2" in capsys.readouterr().out


@pytest.mark.ray
def test_job_on_a_cpu_cluster_fails_fast_for_a_gpu_preset(head, client, capsys):
    """`ray job submit` straight to the cluster (no local check): the job itself says why, at once."""
    job_id = client.submit_job(
        entrypoint="python jobs/train.py --config rtx3090",
        runtime_env={"working_dir": str(REPO), "excludes": cc.DEFAULT_EXCLUDES},
        submission_id="gpu-in-job",
    )
    started = time.monotonic()
    assert cc.wait_for(client, job_id, follow=False, address=head.address) == 1  # FAILED -> exit 1
    assert time.monotonic() - started < 120
    out = capsys.readouterr().out
    assert "job gpu-in-job FAILED" in out
    logs = client.get_job_logs(job_id)
    assert "needs 1 GPU(s)" in logs and "has 0" in logs


@pytest.mark.ray
def test_jobs_stop_and_unknown_job(head, client, capsys):
    job_id = client.submit_job(
        entrypoint=f"{sys.executable} -c 'import time; time.sleep(120)'", submission_id="sleeper"
    )
    deadline = time.monotonic() + 60
    while str(client.get_job_status(job_id)) == "PENDING" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cc.main(["jobs", "stop", "sleeper", "--wait", "--address", head.address]) == 0
    assert "job sleeper STOPPED" in capsys.readouterr().out
    assert cc.main(["jobs", "logs", "no-such-job", "--address", head.address]) == 2
    assert "no job 'no-such-job'" in capsys.readouterr().err


def test_submit_is_runnable_as_a_module():
    """What the fault-tolerance test and `python -m` users run."""
    out = subprocess.run(
        [sys.executable, "-m", "scenimefy.commands.cluster", "submit", "--dry-run", "demo", "--out", "/tmp/d"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["entrypoint"] == "python jobs/demo.py --out /tmp/d"
