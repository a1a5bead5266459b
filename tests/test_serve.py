"""`scenimefy serve` end to end: one Ray Serve instance on 127.0.0.1 with a tiny generator.

The API (health, model info, translations checked pixel by pixel against the in-process
translation path), bad inputs (4xx JSON, replica still healthy afterwards), dynamic batching by
padded size, the bounded queue (503 + Retry-After), videos (64x48 clips made here: the answer
against `translate_video`, audio and phone rotation kept, limits and damaged clips), and the web
page in headless Chromium.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import shutil
import socket
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scenimefy.data.decode import decode_image
from scenimefy.data.images import from_uint8, to_uint8
from scenimefy.inference.translate import load_translator, save_translator_snapshot, translate_batch
from scenimefy.models.translator import ResnetGenerator

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # seconds any one HTTP call may take


@dataclass
class Server:
    url: str
    port: int
    checkpoint: str


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, data: bytes | None = None, content_type: str = "application/octet-stream") -> Reply:
    headers = {"Content-Type": content_type} if data is not None else {}
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def multipart(fields: dict[str, str], file: tuple[str, bytes] | None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    if file is not None:
        name, data = file
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
        parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def expected(checkpoint: str, image: Image.Image) -> np.ndarray:
    """The translation `scenimefy translate` computes for `image`, as (H, W, 3) uint8."""
    g = load_translator(checkpoint, "cpu")
    return to_uint8(translate_batch(g, [from_uint8(np.asarray(image))[0]])[0])


def decoded(reply: Reply) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(reply.body)).convert("RGB"))


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def server(tmp_path_factory, ray_local):
    from ray import serve

    from scenimefy.serve.app import serve_config, start

    torch.manual_seed(0)
    checkpoint = str(tmp_path_factory.mktemp("serve") / "generator.pt")
    config = {"run": {"name": "tiny-style"}, "translator": {"lambda_style": 0.05}}
    save_translator_snapshot(checkpoint, ResnetGenerator(ngf=8, n_blocks=1), config)
    port = _free_port()
    settings = {"port": port, "device": "cpu", "max_upload_mib": 1.5, "max_pixels": 1_200_000, "max_batch_size": 4}
    settings["max_video_pixels"] = 100_000  # 64x48 clips: up to 32 frames
    url = start(checkpoint, serve_config(settings))
    try:
        yield Server(url, port, checkpoint)
    finally:
        serve.shutdown()


def _listening(port: int) -> set[str]:
    """Addresses with a TCP socket listening on `port`, from /proc/net/tcp and tcp6 (Linux)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    raw = bytes.fromhex(address)
                    # each 32-bit word is stored little-endian
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                    found.add(str(ipaddress.ip_address(words)))
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux's /proc/net/tcp")
def test_the_proxy_listens_on_loopback_only(server):
    assert _listening(server.port) == {"127.0.0.1"}


def test_health_and_model_info(server):
    assert call(server.url + "healthz").json() == {"status": "ok"}
    info = call(server.url + "v1/model").json()
    assert info["checkpoint"] == os.path.join(os.path.basename(os.path.dirname(server.checkpoint)), "generator.pt")
    assert info["architecture"] == {"name": "ResnetGenerator", "ngf": 8, "n_blocks": 1}
    assert info["training"] == {"run.name": "tiny-style", "translator.lambda_style": 0.05}
    assert info["serving"]["precision"] == "fp32" and info["limits"]["max_pixels"] == 1_200_000


def test_translate_raw_bytes_matches_the_offline_path(server, photos_dir):
    data = (photos_dir / "hf_0.jpg").read_bytes()
    reply = call(server.url + "v1/translate", data, "image/jpeg")
    assert reply.status == 200, reply.body[:300]
    assert reply.headers["content-type"] == "image/png"
    original = decode_image(data)
    assert reply.headers["x-image-size"] == f"{original.width}x{original.height}"
    out = decoded(reply)
    assert out.shape == (original.height, original.width, 3)
    diff = np.abs(out.astype(int) - expected(server.checkpoint, original).astype(int))
    assert diff.max() <= 1  # the same numbers as `scenimefy translate`, up to rounding


def test_translate_multipart_downscaled_keeps_the_original_size(server, photos_dir):
    data = (photos_dir / "hf_2.jpg").read_bytes()
    body, ctype = multipart({"max_side": "200", "format": "jpeg"}, ("hf_2.jpg", data))
    reply = call(server.url + "v1/translate", body, ctype)
    assert reply.status == 200, reply.body[:300]
    assert reply.headers["content-type"] == "image/jpeg"
    assert reply.headers["x-image-size"] == "800x533" and reply.headers["x-translated-size"] == "200x133"
    assert 'filename="hf_2_anime.jpg"' in reply.headers["content-disposition"]
    assert Image.open(io.BytesIO(reply.body)).size == (800, 533)


@pytest.mark.parametrize(
    "make, status, words",
    [
        (lambda: (b"hello, I am text", "image/png"), 415, "not an image file"),
        (lambda: (png(noise(64, 64, 1))[:200], "image/png"), 422, "damaged or truncated"),
        (lambda: (b"", "image/png"), 400, "empty upload"),
        (lambda: (os.urandom(2 * 2**20), "image/jpeg"), 413, "over the limit of 1572864 bytes"),
        (lambda: (png(np.zeros((1100, 1200, 3), np.uint8)), "image/png"), 413, "1200x1100 = 1320000 pixels"),
        (lambda: multipart({"format": "png"}, None), 400, "without a file"),
        (lambda: multipart({"format": "tiff"}, ("a.png", png(noise(16, 16, 2)))), 400, "format='tiff'"),
    ],
    ids=["not-an-image", "truncated", "empty", "upload-too-large", "too-many-pixels", "no-file", "bad-format"],
)
def test_bad_input_is_a_4xx_json_error(server, make, status, words):
    data, ctype = make()
    reply = call(server.url + "v1/translate", data, ctype)
    assert reply.status == status, reply.body[:300]
    body = reply.json()
    assert words in body["error"] and body["status"] == status


def test_the_service_is_healthy_after_bad_inputs(server):
    for data in (b"junk", png(noise(32, 32, 3))[:100], b""):
        assert 400 <= call(server.url + "v1/translate", data, "image/png").status < 500
    image = noise(40, 52, 4)
    reply = call(server.url + "v1/translate", png(image), "image/png")
    assert reply.status == 200
    assert (
        np.abs(decoded(reply).astype(int) - expected(server.checkpoint, Image.fromarray(image)).astype(int)).max() <= 1
    )


def _concurrently(url: str, bodies: list[bytes]) -> list[Reply]:
    replies: list[Reply | None] = [None] * len(bodies)

    def one(i: int) -> None:
        replies[i] = call(url, bodies[i], "image/png")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert all(r is not None for r in replies), "a request got no reply"
    return replies  # type: ignore[return-value]


@contextlib.contextmanager
def _extra_app(server: Server, name: str, settings: dict, checkpoint: str | None = None):
    """A second application with other settings (or another checkpoint), under /<name>/, deleted afterwards."""
    from ray import serve

    from scenimefy.serve.app import build, serve_config

    app = build(checkpoint or server.checkpoint, serve_config({"device": "cpu", **settings}))
    serve.run(app, name=name, route_prefix=f"/{name}")
    try:
        yield f"{server.url}{name}/"
    finally:
        serve.delete(name)


def test_requests_of_one_padded_size_are_batched_together(server):
    # The batch waits up to 60 s for 4 requests, so the 4 sent together form one batch; two
    # padded sizes (36x48 and 30x46 pad to 36x48; 64x40) give two G passes of 2.
    images = [noise(36, 48, 10), noise(64, 40, 11), noise(34, 46, 12), noise(61, 38, 13)]
    with _extra_app(server, "batch4", {"max_batch_size": 4, "batch_wait_timeout_s": 60.0}) as url:
        replies = _concurrently(url + "v1/translate", [png(im) for im in images])
    for image, reply in zip(images, replies, strict=True):
        assert reply.status == 200, reply.body[:300]
        assert reply.headers["x-batch-size"] == "2"
        want = expected(server.checkpoint, Image.fromarray(image))
        assert np.abs(decoded(reply).astype(int) - want.astype(int)).max() <= 1


def test_over_capacity_is_503_with_retry_after(server):
    # Batches of up to 8 wait 5 s; a replica takes 2 requests and the queue 1 more, so of 6 sent
    # together at most 3 are answered (after the wait) and the others at once with 503. (How many
    # of the 3 places are used depends on when the handle learns of the replica's free slots.)
    settings = {"max_batch_size": 8, "batch_wait_timeout_s": 5.0, "max_ongoing_requests": 2, "max_queued_requests": 1}
    images = [noise(24, 24, 20 + i) for i in range(6)]
    with _extra_app(server, "tight", settings) as url:
        replies = _concurrently(url + "v1/translate", [png(im) for im in images])
    statuses = [r.status for r in replies]
    assert set(statuses) == {200, 503} and 1 <= statuses.count(200) <= 3, statuses
    for image, reply in zip(images, replies, strict=True):
        if reply.status == 503:
            assert reply.headers["retry-after"] == "1" and "at capacity" in reply.json()["error"]
        else:
            want = expected(server.checkpoint, Image.fromarray(image))
            assert np.abs(decoded(reply).astype(int) - want.astype(int)).max() <= 1


def test_an_image_too_large_for_the_memory_budget_is_tiled(server):
    # A budget of 0.0001 GiB holds 419 padded pixels of G at ngf 8 (256 bytes each): 16x16 runs
    # whole, 200x152 in 128-px tiles, blended exactly as `translate_tiled` blends them.
    from scenimefy.inference.translate import translate_tiled

    small, large = noise(16, 16, 30), noise(152, 200, 31)
    with _extra_app(server, "tiled", {"memory_budget_gib": 0.0001, "tile_overlap": 16}) as url:
        replies = [call(url + "v1/translate", png(im), "image/png") for im in (small, large)]
    assert [r.status for r in replies] == [200, 200]
    g = load_translator(server.checkpoint, "cpu")
    tiled = to_uint8(translate_tiled(g, from_uint8(large)[0], tile=128, tile_overlap=16, batch_size=1))
    plain = expected(server.checkpoint, Image.fromarray(large))
    assert np.abs(decoded(replies[1]).astype(int) - tiled.astype(int)).max() <= 1
    assert np.abs(tiled.astype(int) - plain.astype(int)).max() > 1  # tiling made a difference to check
    want_small = expected(server.checkpoint, Image.fromarray(small))
    assert np.abs(decoded(replies[0]).astype(int) - want_small.astype(int)).max() <= 1


def test_a_translation_over_the_request_timeout_is_504(server):
    # A lone request waits 30 s for its batch to fill, far past the 1 s timeout.
    with _extra_app(server, "slow", {"max_batch_size": 8, "batch_wait_timeout_s": 30.0, "request_timeout_s": 1}) as url:
        reply = call(url + "v1/translate", png(noise(16, 16, 40)), "image/png")
        assert reply.status == 504 and "took over 1 s" in reply.json()["error"]
        assert call(url + "healthz").status == 200


# ----------------------------------------------------------------------------------------
# Videos


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """64x48 clips panning across noise: mp4 with audio (6 frames), too long (40 frames), a portrait
    phone clip in webm (display matrix: 90 degrees), a plain webm, and the mp4 cut in half."""
    from test_video import write_clip

    from scenimefy.inference.video import pan_zoom_clip

    folder = tmp_path_factory.mktemp("clips")
    photo = noise(120, 160, 50)
    short, _ = pan_zoom_clip(photo, 6, 64, 48)
    long, _ = pan_zoom_clip(photo, 40, 64, 48)
    made = {
        "short": write_clip(folder / "pan.mp4", short, fps=12),
        "long": write_clip(folder / "long.mp4", long, fps=12, audio=False),
        "phone": write_clip(folder / "phone.webm", short, fps=12, rotation=90),
        "webm": write_clip(folder / "pan.webm", short, fps=12, audio=False),
    }
    data = made["short"].read_bytes()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])
    made["cut"] = folder / "cut.mp4"
    return made


def _frames(data: bytes, suffix: str, tmp_path: Path) -> tuple[list[np.ndarray], int, list[bytes]]:
    """Decoded frames, the rotation players apply, and the audio packets of a video file's bytes."""
    import av

    path = tmp_path / f"{uuid.uuid4().hex}{suffix}"
    path.write_bytes(data)
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        rotation = round(frames[0].rotation) % 360
        arrays = [f.to_ndarray(format="rgb24") for f in frames]
    with av.open(str(path)) as c:
        audio = [bytes(p) for p in c.demux(audio=0) if p.size] if c.streams.audio else []
    return arrays, rotation, audio


def test_a_video_is_translated_like_translate_video(server, clips, tmp_path):
    from scenimefy.inference.video import translate_video

    src = clips["short"]
    reply = call(server.url + "v1/translate", src.read_bytes(), "video/mp4")
    assert reply.status == 200, reply.body[:300]
    assert reply.headers["content-type"] == "video/mp4"
    assert reply.headers["x-video-frames"] == "6" and reply.headers["x-video-size"] == "64x48"
    want = tmp_path / "offline.mp4"
    translate_video(load_translator(server.checkpoint, "cpu"), src, want, smoothing=0.8, progress=False)
    got, rotation, audio = _frames(reply.body, ".mp4", tmp_path)
    offline, _, source_audio = _frames(want.read_bytes(), ".mp4", tmp_path)
    assert len(got) == len(offline) == 6 and got[0].shape == (48, 64, 3) and rotation == 0
    for a, b in zip(got, offline, strict=True):  # the same frames as `scenimefy translate`, up to H.264
        assert np.abs(a.astype(float) - b.astype(float)).mean() < 1.0
    assert audio == source_audio and len(audio) > 3  # audio copied packet for packet


def test_a_phone_video_keeps_its_rotation_and_container(server, clips, tmp_path):
    body, ctype = multipart({"max_side": "32", "format": "png"}, ("phone.webm", clips["phone"].read_bytes()))
    reply = call(server.url + "v1/translate", body, ctype)
    assert reply.status == 200, reply.body[:300]
    assert reply.headers["content-type"] == "video/webm"
    assert 'filename="phone_anime.webm"' in reply.headers["content-disposition"]
    assert reply.headers["x-video-rotation"] == "90" and reply.headers["x-video-size"] == "32x24"
    frames, rotation, _ = _frames(reply.body, ".webm", tmp_path)
    assert len(frames) == 6 and frames[0].shape == (24, 32, 3) and rotation == 90  # shown as 24x32 portrait


@pytest.mark.parametrize(
    "clip, name, status, words",
    [
        ("long", "long.mp4", 413, "40 frames of 64x48 = 122880 pixels, over the limit of 100000"),
        ("cut", "cut.mp4", 422, "damaged or truncated"),
        (None, "notes.mp4", 415, "not a readable video"),
    ],
    ids=["too-many-frames", "truncated", "not-a-video"],
)
def test_bad_videos_are_4xx_json_errors(server, clips, clip, name, status, words):
    data = clips[clip].read_bytes() if clip else b"this is not a video, only text " * 20
    body, ctype = multipart({}, (name, data))
    reply = call(server.url + "v1/translate", body, ctype)
    assert reply.status == status, reply.body[:300]
    assert words in reply.json()["error"] and name in reply.json()["error"]
    assert call(server.url + "healthz").status == 200


# ----------------------------------------------------------------------------------------
# The web page in a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing; .ci/run installs chromium and chromium-driver")
        pytest.skip(f"no headless browser: install chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.add_argument("--proxy-server=direct://")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _drop_and_wait(browser, url: str, files: list[Path], model_text: str) -> None:
    """Open the page at `url`, choose `files` and wait until every card is done or failed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    assert "scenimefy" in browser.title
    WebDriverWait(browser, 60).until(lambda d: model_text in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in files))
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card.done, .card.failed")) == len(files)
    )


def _slide(browser, card, value: int) -> None:
    from selenium.webdriver.common.by import By

    browser.execute_script(
        f"const s = arguments[0]; s.value = {value}; s.dispatchEvent(new Event('input'))",
        card.find_element(By.CSS_SELECTOR, "input.slider"),
    )


def test_the_page_translates_a_photo_in_a_browser(server, browser, photos_dir, tmp_path):
    from selenium.webdriver.common.by import By

    photos = [photos_dir / "hf_6.jpg", photos_dir / "hf_2.jpg"]
    _drop_and_wait(browser, server.url, photos, "ngf 8")
    for photo in photos:
        width, height = decode_image(photo.read_bytes()).size
        card = browser.find_element(By.XPATH, f"//article[.//span[@class='name' and text()='{photo.name}']]")
        assert "done" in card.get_attribute("class").split(), card.find_element(By.CSS_SELECTOR, ".detail").text
        result = card.find_element(By.CSS_SELECTOR, "img.result")
        natural = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", result)
        assert natural == [width, height]
        assert result.is_displayed()
        link = card.find_element(By.CSS_SELECTOR, "a.download")
        assert link.is_displayed() and link.get_attribute("download") == f"{photo.stem}_anime.png"
    assert browser.find_element(By.ID, "download-all").is_enabled()
    assert browser.find_element(By.ID, "summary").text == "2 done"
    # the before/after slider moves the split
    _slide(browser, card, 70)
    pos = browser.execute_script(
        "return arguments[0].style.getPropertyValue('--pos')", card.find_element(By.CSS_SELECTOR, ".compare")
    )
    assert pos == "70%"
    shot = tmp_path / "serve-page.png"
    assert browser.save_screenshot(str(shot))
    assert Image.open(shot).size[0] > 0


def test_the_page_plays_a_translated_video(server, browser, clips):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _drop_and_wait(browser, server.url, [clips["webm"]], "ngf 8")
    card = browser.find_element(By.CSS_SELECTOR, ".card")
    assert "done" in card.get_attribute("class").split(), card.find_element(By.CSS_SELECTOR, ".detail").text
    assert card.find_element(By.CSS_SELECTOR, ".detail").text.startswith("6 frames · 64×48")
    player = card.find_element(By.CSS_SELECTOR, "video.video-result")
    WebDriverWait(browser, 60).until(lambda d: d.execute_script("return arguments[0].readyState", player) >= 1)
    assert browser.execute_script("return [arguments[0].videoWidth, arguments[0].videoHeight]", player) == [64, 48]
    assert player.is_displayed() and not card.find_element(By.CSS_SELECTOR, "img.result").is_displayed()
    assert card.find_element(By.CSS_SELECTOR, "a.download").get_attribute("download") == "pan_anime.webm"


@pytest.mark.skipif(
    os.environ.get("SCENIMEFY_UPDATE_SCREENSHOT") != "1", reason="refreshes docs/serve-page.png when asked"
)
def test_refresh_the_readme_screenshot(server, browser, photos_dir):
    """SCENIMEFY_UPDATE_SCREENSHOT=1 [SCENIMEFY_SCREENSHOT_CHECKPOINT=runs/x/generator.pt]: the page
    serving that checkpoint (default: the tiny untrained one, whose output is grey) after translating
    two photos, written to docs/serve-page.png."""
    from selenium.webdriver.common.by import By

    checkpoint = os.environ.get("SCENIMEFY_SCREENSHOT_CHECKPOINT") or server.checkpoint
    photos = [photos_dir / "hf_6.jpg", photos_dir / "hf_2.jpg", photos_dir / "ag_2.jpg"]
    with _extra_app(server, "shot", {}, checkpoint) as url:
        _drop_and_wait(browser, url, photos, "ngf")
        cards = browser.find_elements(By.CSS_SELECTOR, ".card.done")
        assert len(cards) == len(photos)
        for card, value in zip(cards, (35, 50, 65), strict=False):
            _slide(browser, card, value)
        assert browser.save_screenshot(str(REPO / "docs" / "serve-page.png"))


def test_the_page_shows_a_per_file_error(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    browser.get(server.url)
    browser.find_element(By.ID, "files").send_keys(str(bad))
    card = WebDriverWait(browser, TIMEOUT).until(lambda d: d.find_element(By.CSS_SELECTOR, ".card.failed"))
    assert "not an image file" in card.find_element(By.CSS_SELECTOR, ".detail").text
    assert card.find_element(By.CSS_SELECTOR, ".retry").is_displayed()
