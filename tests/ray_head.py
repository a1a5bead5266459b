"""A real Ray head and a real MLflow tracking server on loopback, for the cluster tests.

Both run as separate process groups under one temporary directory, on free ports, and are
stopped by `stop()` even when a test fails: the head with SIGTERM to its `ray start --block`
group (which stops the raylet, GCS and dashboard), then SIGKILL for any process that is
still bound to this head (its session dir or GCS address appears in the command line or
environment). `ray stop` is never used: it stops every Ray process on the machine. Should the
test process itself be killed (a runner's timeout), a small reaper process per group does the
same cleanup a second later.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
RAY_STARTED = "Ray runtime started."


_HANDED_OUT: set[int] = set()


def free_port(low: int = 20000, high: int = 32000) -> int:
    """A free loopback port below the OS ephemeral range and above Ray's worker ports (10002-19999).

    Ray binds its own unnamed ports in those two ranges while it starts, so a port picked there
    could be taken before the process we hand it to binds it.
    """
    for _ in range(1000):
        port = random.randrange(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port in [{low}, {high})")


def die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the test process dies, even by SIGKILL (Linux prctl).

    A test runner killed on a timeout never reaches its `finally`; this way the head (whose
    `ray start --block` stops its raylet, GCS and dashboard on SIGTERM) and MLflow go with it.
    """
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def quiet_env(**extra: str) -> dict[str, str]:
    """Offline, token-auth off, this venv's python first on PATH (job entrypoints say `python`)."""
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    env.update(
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        MLFLOW_DISABLE_TELEMETRY="true",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            _get(url)
            return
        except (OSError, http.client.HTTPException):  # not up yet
            time.sleep(0.5)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout_s:.0f} s:\n{_tail(log)}")


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen | None, grace_s: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def _pids_mentioning(markers: list[str]) -> list[int]:
    """Processes whose command line or environment contains one of `markers` (not followed by a digit)."""
    markers = [m for m in markers if m]  # an empty marker would match every process
    assert markers
    pattern = re.compile(b"|".join(re.escape(m.encode()) + rb"(?![0-9])" for m in markers))
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + b"\0" + (entry / "environ").read_bytes()
        except OSError:
            continue
        if pattern.search(blob):
            found.append(int(entry.name))
    return found


def descendant_pids(root: int) -> list[int]:
    """Every process below `root` (a local cluster that `ray.init` started runs below the test process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])  # the name in parentheses may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def local_actor_pids(title_part: str, root: int | None = None) -> list[int]:
    """Actor processes below `root` (default: this process) whose Ray process title (`ray::<Class>...`)
    contains `title_part`, e.g. "RayTrainWorker" or "PairScorer" (a Ray Data UDF's class)."""
    pids = []
    for pid in descendant_pids(os.getpid() if root is None else root):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"ray::") and title_part.encode() in title:
            pids.append(pid)
    return sorted(pids)


def spawn_reaper(pgid: int, markers: list[str]) -> subprocess.Popen:
    """A watcher that cleans up process group `pgid` (and processes mentioning `markers`) once
    this test process is gone. It exits by itself when the group ends normally."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import ray_head; ray_head._reap()"
    args = [sys.executable, "-c", code, str(os.getpid()), str(pgid), *markers]
    return subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _reap() -> None:
    parent, pgid, markers = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    while _alive(parent):
        if not _group_alive(pgid):
            return
        time.sleep(1.0)
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
    if markers:
        for pid in _pids_mentioning(markers):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class RayHead:
    """`ray start --head --block` on 127.0.0.1 with free ports, `num_cpus` CPUs, no GPUs."""

    def __init__(self, root: Path, *, num_cpus: int = 2, num_gpus: int = 0):
        self.root = Path(root)
        self.temp_dir = self.root / "ray"
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.port = self.dashboard_port = 0
        self.address = self.gcs_address = ""
        self.log = self.root / "ray-head.log"
        self.proc: subprocess.Popen | None = None
        self._log_offset = 0

    def launch(self) -> "RayHead":
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.gcs_address = f"127.0.0.1:{self.port}"
        cmd = [
            str(BIN / "ray"), "start", "--head", "--block",
            "--node-ip-address=127.0.0.1", f"--port={self.port}",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            f"--num-cpus={self.num_cpus}", f"--num-gpus={self.num_gpus}",
            f"--object-store-memory={300 * 1024**2}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
        ]  # fmt: skip
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=quiet_env(), start_new_session=True
            )
        spawn_reaper(self.proc.pid, [str(self.temp_dir), self.gcs_address])
        return self

    def _started(self) -> bool:
        with open(self.log, "rb") as f:
            f.seek(self._log_offset)
            return RAY_STARTED.encode() in f.read()

    def wait_ready(self, timeout_s: float = 120, attempts: int = 3) -> "RayHead":
        """Until `ray start` reports the node started and the dashboard answers.

        The dashboard answers before the raylet has registered; on an overloaded machine the
        raylet can miss Ray's fixed 30 s start-up window and `ray start` gives up. Then the
        half-started head is cleaned up and started again on new ports (`attempts` in all).
        """
        deadline = time.monotonic() + timeout_s
        for attempt in range(attempts):
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._started():
                    _wait_http(
                        f"{self.address}/api/version", self.proc, self.log, deadline - time.monotonic(), "ray head"
                    )
                    return self
                time.sleep(0.5)
            if self.proc.poll() is None or attempt == attempts - 1:
                break
            self.stop()  # failed during start-up: clean up, then try again
            self.launch()
        raise RuntimeError(f"ray head not started within {timeout_s:.0f} s:\n{self.diagnostics()}")

    def start(self, timeout_s: float = 120) -> "RayHead":
        return self.launch().wait_ready(timeout_s)

    def stop(self) -> list[int]:
        """Stop the head and everything bound to it; return the pids that had to be killed late."""
        _kill_group(self.proc, grace_s=10)
        leftovers: list[int] = []
        for _ in range(3):
            pids = _pids_mentioning([str(self.temp_dir), self.gcs_address])
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    leftovers.append(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        return leftovers

    def diagnostics(self) -> str:
        """The head's own log and the tails of its session logs (for a failing test)."""
        parts = [f"--- {self.log.name}\n{_tail(self.log)}"]
        logs = self.temp_dir / "session_latest" / "logs"
        for name in ("ray_process_exit.log", "dashboard.log", "raylet.out", "gcs_server.out"):
            parts.append(f"--- {name}\n{_tail(logs / name, 2000)}")
        return "\n".join(parts)

    def alive_pids(self) -> list[int]:
        return _pids_mentioning([str(self.temp_dir), self.gcs_address])

    def __enter__(self) -> "RayHead":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a SQLite backend and served artifacts under `root`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = self.root / "mlflow-server.log"
        self.proc: subprocess.Popen | None = None

    def launch(self) -> "MlflowServer":
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
        ]  # fmt: skip
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=quiet_env(), start_new_session=True
            )
        spawn_reaper(self.proc.pid, [str(self.root)])
        return self

    def wait_ready(self, timeout_s: float = 120) -> "MlflowServer":
        _wait_http(f"{self.uri}/health", self.proc, self.log, timeout_s, "mlflow server")
        return self

    def start(self, timeout_s: float = 120) -> "MlflowServer":
        return self.launch().wait_ready(timeout_s)

    def stop(self) -> None:
        _kill_group(self.proc, grace_s=10)

    def __enter__(self) -> "MlflowServer":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def dashboard_json(address: str, path: str) -> dict:
    return json.loads(_get(address + path, timeout=10))
