"""Authenticated control planes: the Ray token reaches the cluster, and a missing or wrong one is one line.

A fake dashboard on 127.0.0.1 plays a token-auth Ray head: /api/version answers 401 without an
Authorization header, 403 with a wrong token, and Ray's version with the right one.
"""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from scenimefy.commands import cluster as cc

TOKEN = "0123456789abcdef0123456789abcdef"


class _Dashboard(http.server.BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self):  # noqa: N802 - the http.server hook
        got = self.headers.get("Authorization")
        type(self).seen.append(got)
        if got is None:
            self._answer(401, b"Unauthorized: Missing authentication token")
        elif got != f"Bearer {TOKEN}":
            self._answer(403, b"Forbidden: Invalid authentication token")
        else:
            import ray

            self._answer(200, json.dumps({"ray_version": ray.__version__, "version": "4"}).encode())

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def dashboard():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Dashboard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    """No token anywhere: an empty home, no token variables."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    _Dashboard.seen.clear()
    return tmp_path


def test_token_sources_in_rays_order(no_token, monkeypatch):
    assert cc.auth_token() == (None, "") and cc.auth_headers() == {}
    home_file = no_token / ".ray" / "auth_token"
    home_file.parent.mkdir()
    home_file.write_text("from-home\n")
    assert cc.auth_token() == ("from-home", str(home_file))
    named = no_token / "token.txt"
    named.write_text(" from-path ")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(named))
    assert cc.auth_token() == ("from-path", str(named))
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert cc.auth_headers() == {"Authorization": "Bearer from-env"}
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(no_token / "missing"))
    with pytest.raises(cc.ClusterError, match=r"^RAY_AUTH_TOKEN_PATH=.*missing: no such file"):
        cc.auth_token()


def test_missing_token_is_one_line_naming_the_sources(dashboard, no_token):
    with pytest.raises(cc.ClusterError) as e:
        cc.connect(dashboard)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"the Ray cluster at {dashboard} requires a token and none was sent")
    for source in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token", "ray get-auth-token"):
        assert source in message
    assert _Dashboard.seen == [None]


def test_wrong_token_names_where_it_came_from(dashboard, no_token, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    with pytest.raises(cc.ClusterError, match=r"refused the token from \$RAY_AUTH_TOKEN \(HTTP 403\)") as e:
        cc.connect(dashboard)
    assert "\n" not in str(e.value)
    assert _Dashboard.seen == ["Bearer not-the-token"]


def test_the_right_token_reaches_every_request(dashboard, no_token, monkeypatch):
    token_file = no_token / ".ray" / "auth_token"
    token_file.parent.mkdir()
    token_file.write_text(TOKEN + "\n")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # sent whatever the mode: the file alone is enough
    client = cc.connect(dashboard)
    assert client is not None
    assert len(_Dashboard.seen) >= 2 and set(_Dashboard.seen) == {f"Bearer {TOKEN}"}  # our check, then Ray's client


def test_the_cli_prints_the_token_error_as_one_line(dashboard, no_token, capsys):
    from scenimefy.commands.cli import main

    assert main(["jobs", "list", "--address", dashboard]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "requires a token" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------
# The FID Inception file: its SHA-256 checked at every use


def test_inception_sha256_is_checked_at_every_use(tmp_path, monkeypatch):
    import hashlib

    from scenimefy.config import PriorsConfig
    from scenimefy.priors import loading

    checkpoints = tmp_path / "cache" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    cached = checkpoints / loading.FID_INCEPTION_FILE
    cached.write_bytes(b"a truncated download")
    cfg = PriorsConfig(cache_dir=str(tmp_path / "cache"), offline=True)
    with pytest.raises(
        ValueError, match=r"FID Inception weights .*: SHA-256 [0-9a-f]{16}\.\.\. is not the expected"
    ) as e:
        loading.inception_for_use(cfg)
    assert "\n" not in str(e.value) and "scenimefy weights download" in str(e.value)
    with pytest.raises(ValueError, match="is not the expected"):
        loading.make_fid_metric(cfg, feature=64)  # the metric refuses it too

    # the right bytes pass, and are checked again on the next use (a later swap is caught)
    monkeypatch.setattr(loading, "FID_INCEPTION_SHA256", hashlib.sha256(b"the real network").hexdigest())
    cached.write_bytes(b"the real network")
    assert loading.inception_for_use(cfg) == cached
    cached.write_bytes(b"swapped on the shared volume")
    with pytest.raises(ValueError, match="is not the expected"):
        loading.inception_for_use(cfg)


def test_an_explicit_custom_network_is_accepted_under_its_own_name_only(tmp_path):
    from scenimefy.config import PriorsConfig
    from scenimefy.priors import loading

    custom = tmp_path / "random_inception.pth"
    custom.write_bytes(b"a demo network")
    cfg = PriorsConfig(cache_dir=str(tmp_path / "cache"), offline=True, inception_weights=str(custom))
    assert loading.inception_for_use(cfg) == custom
    named = tmp_path / loading.FID_INCEPTION_FILE  # claims to be the FID file: must be it
    named.write_bytes(b"a demo network")
    cfg = PriorsConfig(cache_dir=str(tmp_path / "cache"), offline=True, inception_weights=str(named))
    with pytest.raises(ValueError, match="is not the expected"):
        loading.inception_for_use(cfg)
