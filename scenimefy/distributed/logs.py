"""Quiet runs: our own lines on the terminal, Ray's and the libraries' logs in a file.

    with quiet_run(out / "logs" / "run.log", verbose=args.verbose) as log_file:
        ...  # start Ray (init_ray), run stages; the terminal shows only our lines

While a quiet run is active:

- the process's standard error (the file descriptor, so also what Ray's C++ core, tqdm bars and
  Python warnings write) goes to the log file; standard output stays on the terminal, and
  everything of ours prints there (`print`); a line of ours written to Python's `sys.stderr` (a
  tagged warning, e.g. `[mlflow] warning: ...` from the driver) goes to both,
- the lines Ray forwards from its workers (`log_to_driver`) and the cluster's error and warning
  messages (raylet, GCS) all go to the log file, each with the actor or task it came from; only
  the lines of ours among them also reach the terminal: those that start with a `[word] ` tag,
  e.g. `[translator] epoch 1/4 ...` (`OUR_LINE`),
- Ray Data prints no progress bars and no per-dataset start lines (`quiet_ray_data`).

`verbose=True` changes nothing: Ray and the libraries print as they normally do. A traceback
raised out of the block is printed by Python after the block has restored standard error, so a
failure still shows on the terminal.

`defer=True` (the workloads of `scenimefy.commands.jobs_runner`) makes the log file only once the
run has passed its checks, so that a refused run creates nothing: the file (and its folders) is
made when Ray starts (`init_ray`, which every driver calls after its checks) or when the block ends
without an exception, whichever comes first; `on_open(path)` is called then. Until then standard
error and Ray's lines are kept in an unnamed temporary file, copied into the log file when it is
made, or written to the terminal's standard error when the block fails first. Within
`log_file_waits()`, starting Ray does not make the file (a check that starts Ray and may still
refuse the run); `checks_passed()` makes it at once (a driver that prints before Ray starts).

Forwarded worker lines pass through Ray's driver-side dispatcher, and the cluster's messages
through `print_to_stdstream`, both only in private modules (`ray._private.ray_logging`,
`ray._private.worker`); `attach_to_ray` is the one place that touches them, and on a Ray without
them the lines simply stay as Ray prints them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

# A line of ours: a lower-case tag in brackets, then a space ("[pretrain] kimg 0.2/0.8 ...").
# Ray's own lines start otherwise ("[2026-...", "(raylet)", "Traceback", "INFO ...").
OUR_LINE = re.compile(r"^\[[a-z][a-z0-9_-]*\] ")
# Ray's name for the driver's forwarding handler (ray/_private/worker.py, `connect`).
RAY_PRINT_HANDLER = "ray_print_logs"
OUR_PRINT_HANDLER = "scenimefy_quiet_logs"
# Set for the child processes a quiet run starts (a local Ray's workers among them): no download or
# progress bars from Hugging Face libraries, which would otherwise redraw in the log file.
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}


class _Active:
    """The open log file of the current quiet run (or, while its making is deferred, the temporary file
    standing in for it), and what to restore afterwards."""

    def __init__(
        self, path: Path, log: TextIO, *, pending: bool = False, on_open: Callable[[Path], None] | None = None
    ):
        self.path = path
        self.log = log
        self.pending = pending  # the log file is not made yet: `log` is the temporary file
        self.on_open = on_open
        self.waits = 0  # depth of `log_file_waits` blocks
        self.lock = threading.Lock()
        self.attached = False

    def open_log(self) -> None:
        """Make the deferred log file: what the temporary file holds first, then standard error and Ray's
        lines go there."""
        with self.lock:
            if not self.pending:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            sys.stderr.flush()
            log = _open_append(self.path)
            self.log.flush()
            self.log.seek(0)
            shutil.copyfileobj(self.log, log)
            log.flush()
            os.dup2(log.fileno(), 2)
            self.log.close()
            self.log, self.pending = log, False
        if self.on_open is not None:
            self.on_open(self.path)

    def held_back(self) -> str:
        """The deferred run's output so far (what the temporary file holds)."""
        with self.lock:
            sys.stderr.flush()
            self.log.flush()
            self.log.seek(0)
            return self.log.read()

    def write_worker_batch(self, data: dict[str, Any]) -> None:
        """One batch of lines Ray forwarded from a worker: all to the file, ours also to stdout."""
        source = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({source + ' ' if source else ''}pid={data.get('pid')}) "
        lines = data.get("lines") or []
        ours = [line for line in lines if OUR_LINE.match(line)]
        with self.lock:
            for line in lines:
                self.log.write(prefix + line + "\n")
            self.log.flush()
        if ours:
            print("\n".join(ours), flush=True)


class _OurLinesAlsoToTerminal:
    """Stands in for `sys.stderr` during a quiet run: everything goes on to the stream it replaced (standard
    error, the log file), and each line of ours (`OUR_LINE`) also to the terminal's standard error. Once the
    run is over (`close`), it only passes everything on, for handlers that took it meanwhile."""

    def __init__(self, stream: TextIO, terminal_fd: int):
        self._stream = stream
        self._terminal_fd: int | None = terminal_fd
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        with self._lock:
            if self._terminal_fd is None:
                return written
            *lines, self._partial = (self._partial + text).split("\n")
            ours = "".join(line + "\n" for line in lines if OUR_LINE.match(line))
            if ours:
                self._stream.flush()
                data = ours.encode("utf-8", "replace")
                while data:
                    data = data[os.write(self._terminal_fd, data) :]
        return written

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        """The run is over: from now on only pass everything on (the stream itself stays open)."""
        with self._lock:
            if self._terminal_fd is not None and OUR_LINE.match(self._partial):
                os.write(self._terminal_fd, (self._partial + "\n").encode("utf-8", "replace"))
            self._terminal_fd, self._partial = None, ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_active: _Active | None = None


def active_log_file() -> Path | None:
    """The log file of the quiet run in progress, None when there is none (or it is verbose)."""
    return _active.path if _active is not None else None


def quiet_ray_data() -> None:
    """Ray Data in the driver (and the workers it ships its context to): no progress bars, no
    per-dataset execution lines, no per-operator progress."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.verbose_progress = False


def attach_to_ray() -> bool:
    """Route the worker lines Ray forwards to the driver through the current quiet run (after
    `ray.init`; `init_ray` calls it), and make a deferred run's log file (outside `log_file_waits`).
    True when attached; False outside a quiet run or when this Ray has no dispatcher to attach to."""
    checks_passed()
    return _attach()


def checks_passed() -> None:
    """The run has passed its checks: make a deferred quiet run's log file now, unless within
    `log_file_waits` (Ray starting does it too). Nothing happens outside a deferred quiet run."""
    if _active is not None and _active.pending and not _active.waits:
        _active.open_log()


@contextlib.contextmanager
def log_file_waits() -> Iterator[None]:
    """Within the block, starting Ray does not make a deferred quiet run's log file; the next
    `init_ray` after it does."""
    active = _active
    if active is not None:
        active.waits += 1
    try:
        yield
    finally:
        if active is not None:
            active.waits -= 1


def _attach() -> bool:
    if _active is None or _active.attached:
        return _active is not None and _active.attached
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        logging.getLogger(__name__).warning("this Ray has no log dispatcher: worker lines print as Ray prints them")
        return False
    from ray._private import worker

    quiet_ray_data()
    dispatcher.remove_handler(RAY_PRINT_HANDLER)
    dispatcher.add_handler(OUR_PRINT_HANDLER, _active.write_worker_batch)
    # The cluster's error and warning messages (raylet, GCS) skip the dispatcher: Ray's error
    # listener thread calls this module function directly.
    global _rays_print_to_stdstream
    if getattr(worker, "print_to_stdstream", None) is not _print_to_log:
        _rays_print_to_stdstream = getattr(worker, "print_to_stdstream", None)
        worker.print_to_stdstream = _print_to_log
    _active.attached = True
    return True


_rays_print_to_stdstream = None  # Ray's own, while ours stands in for it


def _print_to_log(data: dict[str, Any], ignore_prefix: bool = False) -> None:
    """Stands in for Ray's `print_to_stdstream` during a quiet run (Ray's own outside one)."""
    if _active is not None:
        _active.write_worker_batch(data)
    elif _rays_print_to_stdstream is not None:
        _rays_print_to_stdstream(data, ignore_prefix)


def _detach_from_ray() -> None:
    """Give Ray back its own printing of worker lines (when Ray is still connected)."""
    if _active is None or not _active.attached:
        return
    import functools

    from ray._private import worker
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    dispatcher.remove_handler(OUR_PRINT_HANDLER)
    if worker.print_to_stdstream is _print_to_log and _rays_print_to_stdstream is not None:
        worker.print_to_stdstream = _rays_print_to_stdstream
    if worker.global_worker.connected:
        dispatcher.add_handler(RAY_PRINT_HANDLER, functools.partial(worker.print_to_stdstream, ignore_prefix=False))
    _active.attached = False


def _open_append(path: Path) -> TextIO:
    return open(path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115 (the caller closes it)


def _temporary_log() -> TextIO:
    """An unnamed file in the system's temporary folder, opened for appending (as the log file is)."""
    fd, name = tempfile.mkstemp(prefix="scenimefy-log-", suffix=".txt")
    try:
        return open(name, "a+", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115 (closed by the run)
    finally:
        os.close(fd)
        os.unlink(name)


@contextlib.contextmanager
def quiet_run(
    log_file: str | os.PathLike,
    *,
    verbose: bool = False,
    defer: bool = False,
    on_open: Callable[[Path], None] | None = None,
) -> Iterator[Path | None]:
    """Within the block, Ray's and the libraries' output goes to `log_file` (appended; its folder is
    created), ours to the terminal; yields the file's path, or None with `verbose` (nothing changes).
    `defer`: the file is made only when Ray starts or the block succeeds (module doc)."""
    global _active
    if verbose or _active is not None:  # verbose, or already inside a quiet run: leave it as it is
        yield None if verbose else _active.path
        return
    path = Path(log_file).absolute()
    sys.stdout.flush()
    sys.stderr.flush()
    if defer:
        log = _temporary_log()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        log = _open_append(path)
    saved_fd = os.dup(2)  # sys.stderr (and what wraps it below) writes to fd 2: redirecting fd 2 moves it all
    saved_env = {key: os.environ.get(key) for key in QUIET_ENV}
    os.dup2(log.fileno(), 2)
    os.environ.update(QUIET_ENV)
    saved_stderr = sys.stderr
    sys.stderr = ours_to_terminal = _OurLinesAlsoToTerminal(saved_stderr, saved_fd)
    _active = active = _Active(path, log, pending=defer, on_open=on_open if defer else None)
    try:
        import ray

        if ray.is_initialized():
            _attach()  # a Ray started before the block: its lines are routed; a deferred file waits for `init_ray`
    except ImportError:
        pass
    failed = False
    try:
        yield path
    except BaseException:
        failed = True
        raise
    finally:
        _detach_from_ray()
        held_back = ""
        if active.pending:
            if failed:  # refused or failed before Ray started: no file; what it held goes to the terminal
                held_back = active.held_back()
            else:
                active.open_log()
        _active = None
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.stderr.flush()
        ours_to_terminal.close()
        if sys.stderr is ours_to_terminal:
            sys.stderr = saved_stderr
        active.log.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        active.log.close()
        data = held_back.encode("utf-8", "replace")
        while data:  # to the terminal's standard error, below anything Python's sys.stderr holds
            data = data[os.write(2, data) :]
