"""`scenimefy submit` and `scenimefy jobs {list,logs,stop}`: Ray Jobs on a running cluster.

    scenimefy submit --address http://HEAD:8265 train --config paper data.photos=s3://b/lhq ...
    scenimefy submit --address http://HEAD:8265 --follow --pip lpips train --config tiny
    scenimefy jobs list | logs ID [--follow] | stop ID

`submit` checks the job on this machine first (the workload exists in this checkout, the
config and overrides resolve, the head answers within seconds, the cluster has the GPUs a GPU
preset needs), then submits `python jobs/<workload>.py ARGS` through Ray's
JobSubmissionClient with a runtime_env (this checkout as the working dir, pip packages, env
vars; $MLFLOW_TRACKING_URI is forwarded when set), prints the job id, waits (or follows the
logs) and exits 0 when the job SUCCEEDED, 1 when it FAILED or was STOPPED. User errors print
one line (exit 2, through the CLI's ValueError handling).

Token authentication: the token comes from Ray's usual sources ($RAY_AUTH_TOKEN, the file
$RAY_AUTH_TOKEN_PATH names, ~/.ray/auth_token) and is sent as a bearer header on every request,
whatever $RAY_AUTH_MODE says; a 401 (no token) or 403 (wrong token) is one line naming the fix.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from scenimefy.commands.jobs_runner import WORKLOADS, check_available, check_gpus, parse_job_args, resolve_config
from scenimefy.config import ConfigError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
CONNECT_TIMEOUT_S = 5.0
FORWARDED_ENV = ("MLFLOW_TRACKING_URI",)  # forwarded into the job when set here (never credentials)
DEFAULT_EXCLUDES = ["/.git", "/.venv", "/venv", "/runs", "/mlruns", "/scenimefy-demo"]  # .gitignore applies too
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
AUTOSCALE_START_TIMEOUT_S = 900  # Ray Train's worker-group start timeout when nodes are added on demand


class ClusterError(ValueError):
    """A user-caused problem with the cluster or the job (printed as one line)."""


# ----------------------------------------------------------------------------------------
# Token authentication (Ray >= 2.52: `RAY_AUTH_MODE=token` on the cluster)

TOKEN_HINT = (
    "set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it, or put it in ~/.ray/auth_token "
    "(`ray get-auth-token` on the head prints it; on KubeRay it is in the cluster's token Secret)"
)


def auth_token() -> tuple[str | None, str]:
    """(the cluster token, where it came from), from Ray's sources in Ray's order; (None, "") when none.

    $RAY_AUTH_TOKEN, then the file named by $RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token. A path
    that is set but unreadable is an error naming it (a token silently not sent reads as a 401).
    """
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token, "$RAY_AUTH_TOKEN"
    named = os.environ.get("RAY_AUTH_TOKEN_PATH", "")
    path = Path(named).expanduser() if named else Path.home() / ".ray" / "auth_token"
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        if named:
            raise ClusterError(
                f"RAY_AUTH_TOKEN_PATH={named}: no such file; point it at the cluster's token file"
            ) from None
        return None, ""
    except OSError as e:
        raise ClusterError(f"cannot read the Ray token file {path}: {e.strerror or e}; fix its permissions") from None
    return (token, str(path)) if token else (None, "")


def auth_headers() -> dict[str, str]:
    """{"Authorization": "Bearer <token>"} when a token is available, else {}."""
    token, _ = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def auth_error(address: str, status: int) -> ClusterError:
    """The one-line message for a 401 (no token sent) or a 403 (the token is not this cluster's)."""
    _, source = auth_token()
    if status == 401 or not source:
        return ClusterError(f"the Ray cluster at {address} requires a token and none was sent: {TOKEN_HINT}")
    return ClusterError(
        f"the Ray cluster at {address} refused the token from {source} (HTTP {status}): it is not this cluster's; "
        f"{TOKEN_HINT}"
    )


# ----------------------------------------------------------------------------------------
# Address and client


def resolve_address(address: str | None) -> str:
    """The dashboard URL: --address, else $RAY_API_SERVER_ADDRESS / $RAY_ADDRESS, else local."""
    if not address:
        for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
            value = os.environ.get(var, "")
            if value.startswith(("http://", "https://")):
                address = value
                break
    address = (address or DEFAULT_ADDRESS).rstrip("/")
    if "://" not in address:
        address = "http://" + address
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClusterError(f"--address {address!r}: expected the dashboard URL, e.g. http://HEAD:8265")
    if parts.port in (6379, 10001):
        raise ClusterError(
            f"--address {address!r} names the {'GCS' if parts.port == 6379 else 'Ray Client'} port; jobs go to the "
            f"dashboard: http://{parts.hostname}:8265"
        )
    return address


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within `timeout_s` when nothing listens at the dashboard address."""
    parts = urlsplit(address)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            pass
    except socket.timeout:
        raise ClusterError(
            f"cannot reach the Ray dashboard at {address}: no answer within {timeout_s:g} s. Is the head up "
            f"(`ray status` on it), started with --dashboard-host=0.0.0.0, and port {port} open or forwarded "
            f"(`ray dashboard cluster.yaml`, `kubectl port-forward svc/<cluster>-head-svc 8265`)?"
        ) from None
    except OSError as e:
        reason = e.strerror or str(e)
        raise ClusterError(
            f"cannot reach the Ray dashboard at {address}: {reason}. Is the head up (`ray status` on it) and is the "
            f"dashboard on port {port}?"
        ) from None
    # Something listens; Ray's client has no timeout, so make sure it answers HTTP at all, and
    # that it accepts our token (/api/version needs one on a token-auth cluster).
    request = urllib.request.Request(address + "/api/version", headers=auth_headers())
    try:
        urllib.request.urlopen(request, timeout=timeout_s).close()
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise auth_error(address, e.code) from None
        # any other answer (404 from something else): the client explains it
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ClusterError(
            f"{address} accepts connections but gave no HTTP answer within {timeout_s:g} s ({reason}); "
            f"is this the Ray dashboard port (default 8265)?"
        ) from None


@contextlib.contextmanager
def _address_env(address: str) -> Iterator[None]:
    """Ray's clients prefer $RAY_API_SERVER_ADDRESS / $RAY_ADDRESS over their argument: pin ours."""
    saved = {k: os.environ.get(k) for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")}
    os.environ["RAY_API_SERVER_ADDRESS"] = address
    os.environ.pop("RAY_ADDRESS", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def connect(address: str | None) -> Any:
    """A JobSubmissionClient for the dashboard at `address`, failing fast when unreachable."""
    address = resolve_address(address)
    check_reachable(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    with _address_env(address):
        try:
            return JobSubmissionClient(address, headers=auth_headers())
        except ConnectionError as e:
            raise ClusterError(f"{e} Is this the dashboard port (default 8265)?") from None
        except (RuntimeError, ValueError, OSError) as e:  # 404, 5xx, non-JSON: something else listens there
            raise ClusterError(f"{address} answered, but not as a Ray dashboard ({str(e).splitlines()[0]})") from None
        except AuthenticationError as e:
            raise auth_error(address, 403 if "failed" in str(e).splitlines()[0].lower() else 401) from None


def cluster_gpus(address: str) -> float:
    """GPUs of the alive nodes, from the dashboard's State API (with the token, when there is one)."""
    from ray.util.state.api import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    options = ListApiOptions(filters=[("state", "=", "ALIVE")], timeout=int(CONNECT_TIMEOUT_S * 2))
    with _address_env(address):
        client = StateApiClient(address=address, headers={"Content-Type": "application/json", **auth_headers()})
        nodes = client.list(StateResource.NODES, options=options, raise_on_missing_output=True)
    return float(sum(n.resources_total.get("GPU", 0) for n in nodes))


# ----------------------------------------------------------------------------------------
# submit


def default_working_dir() -> Path:
    """The checkout that holds jobs/ and scenimefy/ (this package's parent), else the cwd."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "jobs").is_dir() and (root / "scenimefy").is_dir() else Path.cwd()


def parse_env(items: list[str]) -> dict[str, str]:
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ClusterError(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value
    return env


def check_outputs_absolute(workload: str, cfg: Any, parsed: argparse.Namespace) -> None:
    """A relative output path would land in the job's temporary copy of the working dir and vanish.

    Checked: run.output_dir (workloads with a config) and --out (evaluate, demo).
    """
    outputs = [("run.output_dir", cfg.run.output_dir)] if cfg is not None else []
    if getattr(parsed, "out", None) is not None:
        outputs.append(("--out", parsed.out))
    for where, value in outputs:
        if "://" not in value and not Path(value).is_absolute():
            raise ClusterError(
                f"{workload}: {where}={value} is relative; in a job it would land in the job's temporary working dir "
                f"and be lost. Give an absolute path on storage every node sees (e.g. {where}=/shared/runs)"
            )


def build_job(args: argparse.Namespace) -> dict[str, Any]:
    """Check the job here and return the submit_job() keyword arguments (no cluster needed)."""
    working_dir = Path(args.working_dir).absolute() if args.working_dir else default_working_dir()
    entry = working_dir / "jobs" / f"{args.workload}.py"
    if not entry.is_file():
        raise ClusterError(
            f"{entry} does not exist: --working-dir must be a scenimefy checkout (with jobs/ and scenimefy/)"
        )
    check_available(args.workload)
    job_args = list(args.args)
    if job_args and job_args[0] == "--":
        job_args = job_args[1:]
    if args.allow_autoscale and "--allow-autoscale" not in job_args:
        job_args.append("--allow-autoscale")
    parsed = parse_job_args(args.workload, job_args)
    try:
        cfg = resolve_config(args.workload, parsed, base_dir=working_dir)
    except ConfigError as e:
        hint = (
            f" (config files travel in --working-dir {working_dir}: name one inside it)"
            if "does not exist" in str(e)
            else ""
        )
        raise ClusterError(f"{args.workload}: {e}{hint}") from None
    check_outputs_absolute(args.workload, cfg, parsed)
    runtime_env: dict[str, Any] = {"working_dir": str(working_dir), "excludes": DEFAULT_EXCLUDES + list(args.exclude)}
    if args.pip:
        runtime_env["pip"] = list(args.pip)
    from scenimefy.distributed.cluster import TRAIN_PRINT_AS_IS

    env = parse_env(args.env)
    env.setdefault(*TRAIN_PRINT_AS_IS)  # the cluster's workers: one copy of each progress line
    if args.allow_autoscale:  # new GPU nodes take minutes to join: let Ray Train wait for them
        env.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", str(AUTOSCALE_START_TIMEOUT_S))
    if env:
        runtime_env["env_vars"] = env
    job: dict[str, Any] = {
        "entrypoint": " ".join(["python", f"jobs/{args.workload}.py", *map(shlex.quote, job_args)]),
        "runtime_env": runtime_env,
        "metadata": {"scenimefy.workload": args.workload},
    }
    if args.submission_id:
        job["submission_id"] = args.submission_id
    return {"job": job, "config": cfg, "dry_run": parsed.dry_run}


def cmd_submit(args: argparse.Namespace) -> int:
    built = build_job(args)
    job = built["job"]
    if args.dry_run:
        import json

        print(json.dumps(job, indent=2))
        return 0
    address = resolve_address(args.address)
    client = connect(address)
    cfg = built["config"]
    if cfg is not None and cfg.run.use_gpu and not args.allow_autoscale:
        check_gpus(args.workload, cfg, cluster_gpus(address), allow_autoscale=False, where=f"the cluster at {address}")
    job_id = client.submit_job(**job)
    print(f"submitted job {job_id} to {address}: {job['entrypoint']}", flush=True)
    if args.no_wait:
        print(f"  follow: scenimefy jobs logs {job_id} --follow --address {address}", flush=True)
        return 0
    return wait_for(client, job_id, follow=args.follow, address=address)


def wait_for(client: Any, job_id: str, *, follow: bool, address: str, poll_s: float = 1.0) -> int:
    """Follow the logs or the status until the job ends; 0 when it SUCCEEDED, else 1."""
    try:
        if follow:
            _print_log_stream(client, job_id)
        last = None
        while True:
            status = str(client.get_job_status(job_id))
            if status != last and not follow:
                print(f"job {job_id}: {status}", flush=True)
            last = status
            if status in TERMINAL:
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        print(
            f"\nstopped waiting; job {job_id} keeps running (scenimefy jobs stop {job_id} --address {address})",
            file=sys.stderr,
        )
        return 130
    info = client.get_job_info(job_id)
    message = f": {info.message}" if info.message and status != "SUCCEEDED" else ""
    print(f"job {job_id} {status}{message}", flush=True)
    return 0 if status == "SUCCEEDED" else 1


def _print_log_stream(client: Any, job_id: str) -> None:
    import asyncio

    async def stream() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(stream())


# ----------------------------------------------------------------------------------------
# jobs list / logs / stop


def cmd_jobs_list(args: argparse.Namespace) -> int:
    client = connect(args.address)
    jobs = sorted(client.list_jobs(), key=lambda j: j.start_time or 0)
    if not jobs:
        print("no jobs")
        return 0
    print(f"{'JOB':<34} {'STATUS':<10} {'STARTED':<19} ENTRYPOINT")
    for j in jobs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.start_time / 1000)) if j.start_time else "-"
        entry = j.entrypoint if len(j.entrypoint) <= 80 else j.entrypoint[:77] + "..."
        print(f"{j.submission_id or j.job_id:<34} {str(j.status):<10} {started:<19} {entry}")
    return 0


def cmd_jobs_logs(args: argparse.Namespace) -> int:
    client = connect(args.address)
    _check_job(client, args.job_id)
    if args.follow:
        _print_log_stream(client, args.job_id)
    else:
        print(client.get_job_logs(args.job_id), end="")
    return 0


def cmd_jobs_stop(args: argparse.Namespace) -> int:
    client = connect(args.address)
    status = _check_job(client, args.job_id)
    if status in TERMINAL:
        print(f"job {args.job_id} already {status}")
        return 0
    client.stop_job(args.job_id)
    print(f"stop requested for job {args.job_id}", flush=True)
    if args.wait:
        while (status := str(client.get_job_status(args.job_id))) not in TERMINAL:
            time.sleep(1.0)
        print(f"job {args.job_id} {status}")
    return 0


def _check_job(client: Any, job_id: str) -> str:
    try:
        return str(client.get_job_status(job_id))
    except RuntimeError as e:
        if "404" in str(e) or "does not exist" in str(e):
            raise ClusterError(f"no job {job_id!r} on this cluster (scenimefy jobs list shows them)") from None
        raise


# ----------------------------------------------------------------------------------------
# Parser


def _add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        metavar="URL",
        help=f"Ray dashboard URL (default: $RAY_API_SERVER_ADDRESS, or $RAY_ADDRESS if it is http(s)://, else "
        f"{DEFAULT_ADDRESS})",
    )


SUBMIT_HELP = "submit a workload to a Ray cluster as a Ray Job, after checking it here"
JOBS_HELP = "list, read and stop Ray Jobs on a cluster (fast, one-line errors for a wrong address)"
JOBS_DESCRIPTION = """Ray Jobs on a running cluster, by submission id.

    scenimefy jobs list [--address URL]
    scenimefy jobs logs ID [--follow] [--address URL]
    scenimefy jobs stop ID [--wait] [--address URL]

Like `ray job list/logs/stop`, plus: the address is checked first (an unreachable or silent
dashboard fails within seconds, with a hint), errors are one line, and the list is a table.
"""


def add_submit_arguments(p: argparse.ArgumentParser) -> None:
    """`scenimefy submit [options] WORKLOAD ARGS`: ARGS are the workload's own (`jobs/<workload>.py --help`)."""
    _add_address(p)
    p.add_argument(
        "--working-dir",
        default=None,
        metavar="DIR",
        help="checkout to upload (default: the one this scenimefy runs from)",
    )
    p.add_argument(
        "--pip",
        action="append",
        default=[],
        metavar="REQ",
        help="pip requirement installed for the job (repeatable; default: none)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="env var for the job (repeatable; default: only $MLFLOW_TRACKING_URI when set here)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="more paths left out of the upload, repeatable (default: none; always left out: "
        + " ".join(DEFAULT_EXCLUDES)
        + " and what .gitignore lists)",
    )
    p.add_argument("--submission-id", default=None, metavar="ID", help="job id to use (default: Ray's raysubmit_...)")
    p.add_argument(
        "--allow-autoscale",
        action="store_true",
        help=f"submit a GPU run to a cluster with too few GPUs now; Ray Train then waits up to "
        f"{AUTOSCALE_START_TIMEOUT_S} s for GPU workers",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--follow", action="store_true", help="stream the job's logs until it ends")
    mode.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.add_argument("--dry-run", action="store_true", help="check and print the job spec without submitting")
    p.add_argument("workload", choices=list(WORKLOADS), help="what to run")
    p.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        help="the workload's arguments (`scenimefy WORKLOAD --help` lists them): --config PRESET key=value ...",
    )
    p.set_defaults(func=cmd_submit)


def add_jobs_arguments(p: argparse.ArgumentParser) -> None:
    """`scenimefy jobs list | logs ID [--follow] | stop ID [--wait]`."""
    jobs_sub = p.add_subparsers(dest="jobs_command", required=True, title="commands", metavar="{list,logs,stop}")
    q = jobs_sub.add_parser("list", help="jobs on the cluster with their status, oldest first")
    _add_address(q)
    q.set_defaults(func=cmd_jobs_list)
    q = jobs_sub.add_parser("logs", help="a job's logs")
    _add_address(q)
    q.add_argument("job_id", help="submission id, as `scenimefy jobs list` shows it")
    q.add_argument("--follow", action="store_true", help="stream until the job ends")
    q.set_defaults(func=cmd_jobs_logs)
    q = jobs_sub.add_parser("stop", help="stop a running job")
    _add_address(q)
    q.add_argument("job_id", help="submission id, as `scenimefy jobs list` shows it")
    q.add_argument("--wait", action="store_true", help="wait until it has stopped")
    q.set_defaults(func=cmd_jobs_stop)


def add_cluster_commands(subparsers: Any) -> None:
    """Register `submit` and `jobs` on another parser's subcommands (the `scenimefy` CLI has its own)."""
    from scenimefy.commands.cli import register

    register(subparsers, "submit")
    register(subparsers, "jobs")


def main(argv: list[str] | None = None) -> int:
    """`python -m scenimefy.commands.cluster submit|jobs ...`: the same as `scenimefy submit|jobs ...`."""
    from scenimefy.commands.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
