"""`keep_tone`: the photo's brightness, contrast and colour cast put back on its translation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from scenimefy.commands.cli import main
from scenimefy.inference.tone import RGB_TO_YCBCR, keep_tone, tone_statistics
from scenimefy.inference.translate import save_translator_snapshot, translate_batch, translate_paths
from scenimefy.inference.video import translate_frames
from scenimefy.models.translator import ResnetGenerator, init_weights


def _grey(values: list[float]) -> torch.Tensor:
    """A (3, 1, N) grey image: R = G = B = each value."""
    return torch.tensor(values, dtype=torch.float32)[None, None, :].expand(3, 1, len(values)).clone()


def _ycbcr_means(image: torch.Tensor) -> np.ndarray:
    return (RGB_TO_YCBCR.float() @ image.reshape(3, -1).mean(dim=1)).numpy()


def _generator(seed: int = 0) -> ResnetGenerator:
    torch.manual_seed(seed)
    return init_weights(ResnetGenerator(ngf=4, n_blocks=1), gain=0.3).eval()


def _scene(seed: int = 0, size: int = 32) -> torch.Tensor:
    """A (3, size, size) image in [-1, 1] with structure: a horizon, a gradient sky, noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(-0.2, 0.8, size)[:, None, None] * np.ones((size, size, 3))
    rows[size // 2 :] = np.array([-0.2, 0.3, -0.3])  # a green ground below the horizon
    return torch.from_numpy(np.clip(rows + rng.normal(0, 0.1, rows.shape), -1, 1)).float().permute(2, 0, 1)


def test_grey_values_computed_by_hand():
    # translation: Y in {0.2, 0.6} (mean 0.4, std 0.2); photo: Y in {-0.5, -0.3} (mean -0.4, std 0.1)
    translated, photo = _grey([0.2, 0.6]), _grey([-0.5, -0.3])
    # strength 1: gain 0.1 / 0.2 = 0.5 around the translation's mean, then moved to the photo's mean
    full = keep_tone(translated, photo, 1.0)
    assert full[:, 0].flatten().tolist() == pytest.approx([-0.5, -0.3] * 3, abs=1e-6)
    # strength 0.5: gain 1 + 0.5 (0.5 - 1) = 0.75, mean 0.4 + 0.5 (-0.4 - 0.4) = 0
    half = keep_tone(translated, photo, 0.5)
    assert half[:, 0].flatten().tolist() == pytest.approx([-0.15, 0.15] * 3, abs=1e-6)
    # strength 0: the translation itself
    assert keep_tone(translated, photo, 0.0) is translated


def test_the_photos_colour_cast_and_luma_statistics_are_taken():
    torch.manual_seed(0)
    translated = torch.rand(3, 16, 16) * 0.6 - 0.3  # mid-range, no clamping below
    photo = torch.rand(3, 20, 12) * 0.4 - 0.6  # darker, another size
    photo[0] += 0.3  # a red cast (dusk)
    out = keep_tone(translated, photo, 1.0)
    assert _ycbcr_means(out) == pytest.approx(_ycbcr_means(photo), abs=1e-5)
    assert tone_statistics(out)[1].item() == pytest.approx(tone_statistics(photo)[1].item(), rel=1e-4)
    # the structure is the translation's: the luma planes are related by a positive gain
    luma = lambda im: RGB_TO_YCBCR[0].float() @ im.reshape(3, -1)  # noqa: E731
    assert np.corrcoef(luma(out).numpy(), luma(translated).numpy())[0, 1] == pytest.approx(1.0, abs=1e-6)


def test_a_flat_translation_is_not_divided_by_zero_and_results_are_clamped():
    flat = torch.zeros(3, 8, 8)
    bright = torch.ones(3, 8, 8) * 0.99
    bright[:, :4] = -0.99
    out = keep_tone(flat, bright, 1.0)
    assert torch.isfinite(out).all() and out.min() >= -1 and out.max() <= 1
    with pytest.raises(ValueError, match=r"keep_tone=1.5: expected a strength in \[0, 1\]"):
        keep_tone(flat, bright, 1.5)


def test_the_generator_hardly_sees_global_brightness_and_keep_tone_restores_it():
    """Instance norm after G's first convolution removes a gain and offset of the whole input: a
    darkened copy of a scene is translated almost as the scene (docs/method.md)."""
    G = _generator()
    day = _scene(0)
    night = 0.3 * day - 0.6
    other = _scene(1).flip(1)  # another layout
    with torch.no_grad():
        y_day, y_night, y_other = translate_batch(G, [day, night, other])
    assert (y_day - y_night).abs().mean() < 0.2 * (y_day - y_other).abs().mean()
    # with keep_tone the night translation is as dark as the night photo
    kept = keep_tone(y_night, night, 1.0)
    night_luma, kept_luma = tone_statistics(night)[0][0].item(), tone_statistics(kept)[0][0].item()
    assert kept_luma == pytest.approx(night_luma, abs=0.02)
    assert abs(tone_statistics(y_night)[0][0].item() - night_luma) > 0.3


def test_translate_paths_and_video_frames_apply_it(tmp_path):
    G = _generator()
    dark = ((0.3 * _scene(2) - 0.6).permute(1, 2, 0).numpy() * 127.5 + 127.5).round().astype(np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(dark).save(tmp_path / "in" / "night.png")
    common = dict(batch_size=2, max_side=0, tile_overlap=8, device="cpu", progress=False)
    means = {}
    for strength, tile in [(0.0, 0), (1.0, 0), (1.0, 16)]:
        out = tmp_path / f"out_{strength}_{tile}"
        translate_paths(G, [str(tmp_path / "in")], str(out), tile=tile, keep_tone=strength, **common)
        means[strength, tile] = np.asarray(Image.open(out / "night.png").convert("L"), dtype=np.float64).mean()
    photo_mean = np.asarray(Image.fromarray(dark).convert("L"), dtype=np.float64).mean()
    assert abs(means[1.0, 0] - photo_mean) < 3 and abs(means[1.0, 16] - photo_mean) < 3  # whole and tiled
    assert abs(means[0.0, 0] - photo_mean) > 20
    with pytest.raises(ValueError, match="keep_tone=-0.1"):
        translate_paths(G, [str(tmp_path / "in")], str(tmp_path / "bad"), tile=0, keep_tone=-0.1, **common)

    frames = [0.3 * _scene(i) - 0.6 for i in range(3)]
    plain = list(translate_frames(G, frames, batch_size=2))
    kept = list(translate_frames(G, frames, batch_size=2, keep_tone=1.0))
    for frame, y, k in zip(frames, plain, kept, strict=True):
        assert torch.equal(k, keep_tone(y, frame, 1.0))


def test_cli_option_and_config_key(tmp_path, capsys):
    checkpoint = save_translator_snapshot(tmp_path / "generator.pt", _generator(), {})
    photo = ((0.3 * _scene(3) - 0.6).permute(1, 2, 0).numpy() * 127.5 + 127.5).round().astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "night.png")
    outs = {}
    for name, extra in [("off", []), ("option", ["--keep-tone", "1"]), ("key", ["--set", "translate.keep_tone=1"])]:
        code = main(["translate", str(tmp_path / "night.png"), "--checkpoint", checkpoint, "--out",
                     str(tmp_path / name), "--device", "cpu", *extra])  # fmt: skip
        assert code == 0
        outs[name] = np.asarray(Image.open(tmp_path / name / "night.png"))
    assert np.array_equal(outs["option"], outs["key"]) and not np.array_equal(outs["off"], outs["option"])
    capsys.readouterr()
    code = main(["translate", str(tmp_path / "night.png"), "--checkpoint", checkpoint, "--out", str(tmp_path / "x"),
                 "--keep-tone", "2"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "translate.keep_tone=2.0: need 0 <= keep_tone <= 1" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
