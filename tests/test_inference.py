"""`scenimefy translate`'s engine: checkpoint loading, exact-size translation, tiling, files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shared_photos import PHOTOS

from scenimefy.data.decode import load_image
from scenimefy.data.images import from_uint8, to_uint8
from scenimefy.inference.translate import (
    SNAPSHOT_FORMAT,
    MemoryPlan,
    TranslateReport,
    free_memory,
    load_translator,
    padded_size,
    save_translator_snapshot,
    tile_starts,
    translate_batch,
    translate_paths,
    translate_tiled,
)
from scenimefy.models.translator import ResnetGenerator, init_weights

needs_photos = pytest.mark.skipif(not (PHOTOS / "hf_1.png").is_file(), reason="shared photos not available")


def _generator(ngf: int = 4, n_blocks: int = 1, seed: int = 0) -> ResnetGenerator:
    """A tiny random generator whose output varies with the input (gain 0.3, not CUT's 0.02,
    so a wrong crop or a swapped image shows up in the pixels)."""
    torch.manual_seed(seed)
    return init_weights(ResnetGenerator(ngf=ngf, n_blocks=n_blocks), gain=0.3).eval()


def _run(g, inputs, out_dir, **kw) -> TranslateReport:
    args = dict(batch_size=2, max_side=0, tile=0, tile_overlap=0, device="cpu", progress=False)
    args.update(kw)
    return translate_paths(g, [str(p) for p in inputs], str(out_dir), **args)


def _noise_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    arr = np.clip(base + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# ----------------------------------------------------------------------------------------
# exact-size translation of files


@needs_photos
def test_real_photos_keep_size_and_stem(tmp_path):
    g = _generator()
    report = _run(g, [PHOTOS / "hf_1.png", PHOTOS / "hf_0.jpg"], tmp_path / "out")
    assert report.written == [str(tmp_path / "out" / "hf_1.png"), str(tmp_path / "out" / "hf_0.png")]
    assert report.skipped == []
    assert Image.open(report.written[0]).size == (510, 339)
    assert Image.open(report.written[1]).size == (600, 443)
    # the file is G on the exact image (padded and cropped), clamped and rounded
    x = from_uint8(np.array(load_image(PHOTOS / "hf_1.png")))[0]
    expected = to_uint8(translate_batch(g, [x])[0])
    assert np.array_equal(_pixels(report.written[0]), expected)
    assert _pixels(report.written[0]).std() > 5  # not a flat image


def test_odd_sizes_are_kept_exactly(tmp_path):
    src = _noise_image(tmp_path / "in" / "odd.png", 37, 53)
    report = _run(_generator(), [src], tmp_path / "out")
    assert Image.open(report.written[0]).size == (37, 53)
    assert padded_size(53, 37) == (56, 40)
    assert padded_size(5, 3) == (8, 8)


def test_tiny_image_is_translated(tmp_path):
    src = _noise_image(tmp_path / "in" / "tiny.png", 3, 5)
    report = _run(_generator(), [src], tmp_path / "out")
    assert Image.open(report.written[0]).size == (3, 5)


def test_output_is_rounded_not_truncated():
    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.full_like(x, 0.999)  # (0.999 + 1) * 127.5 = 254.87

    y = translate_batch(Constant(), [torch.zeros(3, 8, 8)])[0]
    assert to_uint8(y)[0, 0, 0] == 255


@needs_photos
def test_max_side_downscales_keeping_aspect_ratio(tmp_path):
    report = _run(_generator(), [PHOTOS / "ag_3.jpg", PHOTOS / "hf_8.png"], tmp_path / "out", max_side=64)
    assert Image.open(report.written[0]).size == (64, 34)  # 1280 x 672 -> 64 x 33.6
    assert Image.open(report.written[1]).size == (64, 36)  # 510 x 288 -> 64 x 36.1


def test_max_side_leaves_small_images_alone(tmp_path):
    src = _noise_image(tmp_path / "in" / "a.png", 40, 24)
    report = _run(_generator(), [src], tmp_path / "out", max_side=64)
    assert Image.open(report.written[0]).size == (40, 24)


def test_batching_does_not_change_results(tmp_path):
    g = _generator()
    srcs = [_noise_image(tmp_path / "in" / f"{i}.png", 30 + i, 20, seed=i) for i in range(3)]  # one padded size
    one = _run(g, srcs, tmp_path / "b1", batch_size=1)
    three = _run(g, srcs, tmp_path / "b3", batch_size=3)
    for a, b in zip(one.written, three.written, strict=True):
        assert np.abs(_pixels(a).astype(int) - _pixels(b).astype(int)).max() <= 1


# ----------------------------------------------------------------------------------------
# folders, naming, skipping


def test_folder_keeps_structure_and_skips_bad_files(tmp_path, capsys):
    root = tmp_path / "in"
    _noise_image(root / "a.png", 37, 53)
    _noise_image(root / "sub" / "b.jpg", 24, 16)
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    report = _run(_generator(), [root], tmp_path / "out")
    assert report.written == [str(tmp_path / "out" / "a.png"), str(tmp_path / "out" / "sub" / "b.png")]
    assert Image.open(tmp_path / "out" / "sub" / "b.png").size == (24, 16)
    skipped = dict(report.skipped)
    assert set(skipped) == {str(root / "notes.txt"), str(root / "sub" / "broken.png")}
    assert "unsupported file type" in skipped[str(root / "notes.txt")]
    assert "cannot decode" in skipped[str(root / "sub" / "broken.png")]
    err = capsys.readouterr().err
    assert f"skipped {root / 'notes.txt'}" in err and "broken.png" in err


def test_explicit_non_image_and_missing_inputs_are_skipped(tmp_path):
    txt = tmp_path / "readme.txt"
    txt.write_text("hello")
    good = _noise_image(tmp_path / "in" / "ok.png", 16, 16)
    report = _run(_generator(), [txt, tmp_path / "nope.png", good], tmp_path / "out")
    assert report.written == [str(tmp_path / "out" / "ok.png")]
    assert [p for p, _ in report.skipped] == [str(tmp_path / "nope.png"), str(txt)]
    assert report.skipped[0][1] == "no such file or directory"


def test_clashing_output_names_are_disambiguated(tmp_path):
    root = tmp_path / "in"
    _noise_image(root / "x.jpg", 16, 16, seed=1)
    _noise_image(root / "x.png", 16, 16, seed=2)
    report = _run(_generator(), [root, root / "x.png"], tmp_path / "out")  # x.png named twice
    assert report.written == [str(tmp_path / "out" / "x.png"), str(tmp_path / "out" / "x_1.png")]
    assert not np.array_equal(_pixels(report.written[0]), _pixels(report.written[1]))


def test_output_never_overwrites_an_input(tmp_path):
    root = tmp_path / "in"
    src = _noise_image(root / "photo.png", 16, 16)
    before = src.read_bytes()
    with pytest.raises(ValueError, match="which is one of the inputs"):
        _run(_generator(), [root], root)
    assert src.read_bytes() == before
    # a JPEG input in the same folder is fine: the output is a new .png beside it
    jpg = _noise_image(root / "other.jpg", 16, 16)
    jpg_bytes = jpg.read_bytes()
    report = _run(_generator(), [jpg], root)
    assert report.written == [str(root / "other.png")] and jpg.read_bytes() == jpg_bytes


def test_no_temporary_files_are_left(tmp_path):
    src = _noise_image(tmp_path / "in" / "a.png", 16, 16)
    _run(_generator(), [src], tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png"]


# ----------------------------------------------------------------------------------------
# tiles


def test_tile_starts_cover_with_overlap():
    assert tile_starts(100, 32, 8) == [0, 24, 48, 68]
    assert tile_starts(32, 32, 8) == [0]
    assert tile_starts(20, 32, 8) == [0]


def test_tiling_arguments_are_checked(tmp_path):
    src = _noise_image(tmp_path / "a.png", 16, 16)
    with pytest.raises(ValueError, match="multiple of 4"):
        _run(_generator(), [src], tmp_path / "out", tile=30)
    with pytest.raises(ValueError, match="tile_overlap"):
        _run(_generator(), [src], tmp_path / "out", tile=32, tile_overlap=32)


def test_tile_not_smaller_than_image_equals_untiled(tmp_path):
    src = _noise_image(tmp_path / "in" / "a.png", 90, 60)
    g = _generator()
    plain = _run(g, [src], tmp_path / "plain")
    tiled = _run(g, [src], tmp_path / "tiled", tile=96, tile_overlap=16)
    assert np.array_equal(_pixels(plain.written[0]), _pixels(tiled.written[0]))
    x = from_uint8(np.array(load_image(src)))[0]
    assert torch.equal(translate_tiled(g, x, tile=92, tile_overlap=8, batch_size=2), translate_batch(g, [x])[0])


@pytest.fixture(scope="module")
def tiled_case():
    """A real photo at 192x128, a random generator, untiled and tiled translations."""
    if (PHOTOS / "hf_2.jpg").is_file():
        img = load_image(PHOTOS / "hf_2.jpg").resize((192, 128), Image.BICUBIC)
    else:
        img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 192, 3), dtype=np.uint8))
    x = from_uint8(np.array(img))[0]
    g = _generator(ngf=8, n_blocks=2)
    full = translate_batch(g, [x])[0]
    shared = translate_tiled(g, x, tile=64, tile_overlap=16, batch_size=4)
    per_tile = translate_tiled(g, x, tile=64, tile_overlap=16, batch_size=4, shared_statistics=False)
    no_blend = translate_tiled(g, x, tile=64, tile_overlap=0, batch_size=4, shared_statistics=False)
    return full, shared, per_tile, no_blend


def test_tiled_result_is_close_to_untiled(tiled_case):
    full, shared, per_tile, _ = tiled_case
    assert shared.shape == full.shape == (3, 128, 192)
    mad_shared = (shared - full).abs().mean().item()
    mad_per_tile = (per_tile - full).abs().mean().item()
    assert mad_shared < 0.5 * mad_per_tile  # one set of instance-norm statistics for all tiles
    assert mad_shared < 0.5 * full.std().item()


def _seam_ratio(y: torch.Tensor, columns: list[int]) -> float:
    """Mean |horizontal step| across the given columns relative to the image's mean step."""
    steps = (y[:, :, 1:] - y[:, :, :-1]).abs().mean(dim=(0, 1))  # (W-1,)
    return (steps[columns].mean() / steps.mean()).item()


def test_tiles_blend_without_visible_seams(tiled_case):
    full, shared, _, no_blend = tiled_case
    # tiles (overlap 16) start at x = 0, 48, 96, 128; without overlap the cuts are at 64 and 128
    cuts = [63, 127]
    assert _seam_ratio(no_blend, cuts) > 1.5 * _seam_ratio(full, cuts)  # the check can see seams
    seams = [47, 63, 95, 111, 127, 143]  # where a tile's ramp begins or ends
    assert _seam_ratio(shared, seams) < 1.25 * _seam_ratio(full, seams) + 0.1


def test_tiled_files_have_exact_size(tmp_path):
    src = _noise_image(tmp_path / "in" / "big.png", 101, 70)
    report = _run(_generator(), [src], tmp_path / "out", tile=32, tile_overlap=8)
    assert Image.open(report.written[0]).size == (101, 70)


# ----------------------------------------------------------------------------------------
# checkpoints


def test_snapshot_round_trip(tmp_path):
    g = _generator(ngf=8, n_blocks=2)
    path = save_translator_snapshot(tmp_path / "ckpt" / "generator.pt", g, {"translator": {"ngf": 8, "taps": (0, 4)}})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == SNAPSHOT_FORMAT and raw["version"] == 1
    assert raw["arch"] == {"ngf": 8, "n_blocks": 2}
    assert raw["config"]["translator"]["ngf"] == 8
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    for source in (path, tmp_path / "ckpt"):  # the file, or the checkpoint directory holding it
        loaded = load_translator(source, "cpu")
        assert not loaded.training
        assert torch.equal(loaded(x), g(x))
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["generator.pt"]  # no temporary left


def test_snapshot_config_must_be_plain_data(tmp_path):
    with pytest.raises(ValueError, match=r"config\.bad is a object"):
        save_translator_snapshot(tmp_path / "g.pt", _generator(), {"bad": object()})


def test_authors_style_state_dict_loads_with_inferred_arch(tmp_path):
    g = _generator(ngf=8, n_blocks=3)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    for name, prefix in (("net_G.pth", ""), ("dp_net_G.pth", "module.")):
        torch.save({prefix + k: v for k, v in g.state_dict().items()}, tmp_path / name)
        loaded = load_translator(tmp_path / name, "cpu")
        assert loaded.arch == {"ngf": 8, "n_blocks": 3}
        assert torch.equal(loaded(x), g(x))


def test_wrong_architecture_snapshot_names_the_mismatch(tmp_path):
    path = tmp_path / "g.pt"
    save_translator_snapshot(path, _generator(ngf=4, n_blocks=1), {})
    snap = torch.load(path, weights_only=True)
    snap["arch"] = {"ngf": 8, "n_blocks": 1}
    torch.save(snap, path)
    with pytest.raises(ValueError) as err:
        load_translator(path, "cpu")
    msg = str(err.value)
    assert msg.startswith(f"{path}: weights do not match ResnetGenerator(ngf=8, n_blocks=1)")
    assert "model.1.weight [4, 3, 7, 7] vs expected [8, 3, 7, 7]" in msg
    assert "\n" not in msg


def test_incomplete_cut_state_dict_names_missing_keys(tmp_path):
    state = _generator(ngf=4, n_blocks=2).state_dict()
    del state["model.13.conv_block.5.bias"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"partial\.pth: .*1 missing keys \(model\.13\.conv_block\.5\.bias\)"):
        load_translator(tmp_path / "partial.pth", "cpu")


def test_bad_checkpoint_paths_give_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"missing\.pt: no such file or directory"):
        load_translator(tmp_path / "missing.pt", "cpu")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(
        ValueError, match=r"empty_dir: not a translator checkpoint directory \(generator\.pt is missing\)"
    ):
        load_translator(tmp_path / "empty_dir", "cpu")
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes\.pt is not a checkpoint: it is not a PyTorch weights file") as err:
        load_translator(text, "cpu")
    assert "Expected a translator's generator.pt" in str(err.value) and "Shinkai_net_G.pth" in str(err.value)
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")  # a photo passed by mistake
    with pytest.raises(ValueError, match=r"photo\.png is not a checkpoint: it is not a PyTorch weights file") as err:
        load_translator(tmp_path / "photo.png", "cpu")
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "zero.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"zero\.pt is not a checkpoint: the file is empty"):
        load_translator(tmp_path / "zero.pt", "cpu")
    torch.save(ResnetGenerator(ngf=4, n_blocks=1), tmp_path / "pickled.pt")  # a pickled module
    with pytest.raises(ValueError, match=r"pickled\.pt is not a checkpoint: it pickles Python objects") as err:
        load_translator(tmp_path / "pickled.pt", "cpu")
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)
    torch.save({"model.0.weight": torch.zeros(8, 3, 4, 4)}, tmp_path / "disc.pth")  # a discriminator
    with pytest.raises(ValueError, match=r"disc\.pth: not a CUT ResnetGenerator state dict"):
        load_translator(tmp_path / "disc.pth", "cpu")
    torch.save({"format": "scenimefy.training_state", "version": 1}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match=r"state\.pt: a 'scenimefy\.training_state' file, not a translator snapshot"):
        load_translator(tmp_path / "state.pt", "cpu")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt is not a translator checkpoint; expected a translator's"):
        load_translator(tmp_path / "list.pt", "cpu")


# ----------------------------------------------------------------------------------------
# memory budget: smaller batches, then tiles, instead of running out of memory


def test_memory_plan_sizes_batches_and_tiles_by_hand():
    g = _generator(ngf=4)
    # per pixel: a pass 32 * 4 + 48 = 176 bytes, the image's own buffers 80; one image in one pass 256
    plan = MemoryPlan.for_generator(g, torch.device("cpu"), budget_gib=(100 * 100 * 256 * 3) / 2**30)
    assert plan.bytes_per_pixel == 176 and plan.image_bytes_per_pixel == 80 and plan.budget == 100 * 100 * 256 * 3
    assert plan.batch_for(100, 100, batch_size=8) == 3  # three 100x100 images fit
    assert plan.batch_for(100, 100, batch_size=2) == 2
    assert plan.batch_for(400, 400, batch_size=8) == 1  # never below one
    assert plan.tile_for(100, 300) == 0  # fits whole
    # 7_680_000 - 100 * 304 * 80 = 5_248_000 left for a pass: sqrt(5_248_000 / 176) = 172 -> 128 (multiple of 64)
    assert plan.tile_for(100, 304) == 128
    assert plan.tile_for(100, 304, overlap=80) == 192  # tiles must exceed twice the overlap
    assert MemoryPlan(0, 128).tile_for(10_000, 10_000) == 0 and MemoryPlan(0, 128).batch_for(9999, 9999, 4) == 4
    with pytest.raises(ValueError, match="memory budget -1"):
        MemoryPlan.for_generator(g, torch.device("cpu"), budget_gib=-1)


def test_memory_plan_counts_the_image_buffers_beside_the_tiles():
    plan = MemoryPlan(budget=20_000_000, bytes_per_pixel=176)
    # 300x300 needs 90_000 * 256 = 23_040_000 in one pass; its buffers take 7_200_000, leaving 12_800_000:
    # sqrt(12_800_000 / 176) = 269 -> 256-px tiles (the pass alone would allow 320)
    assert plan.tile_for(300, 300) == 256 and plan.tiles_fit(300, 300, 256)
    assert plan.tiles_for(64, 300, 300, batch_size=8) == 8  # 12_800_000 // (64 * 64 * 176) = 17
    assert plan.tiles_for(128, 300, 300, batch_size=8) == 4  # 12_800_000 // 2_883_584 = 4
    # 1000x1000: its buffers alone (80_000_000) exceed the budget; the smallest tiles, said to be over it
    assert plan.tile_for(1000, 1000) == 128 and not plan.tiles_fit(1000, 1000, 128)
    assert plan.tiles_for(128, 1000, 1000, batch_size=4) == 1


def test_default_budget_is_a_share_of_the_free_memory():
    before = free_memory(torch.device("cpu"))
    if before is None:
        pytest.skip("this platform does not report its free memory")
    plan = MemoryPlan.for_generator(_generator(ngf=4), torch.device("cpu"))
    after = free_memory(torch.device("cpu"))
    # free memory may move between the reads: bound by both, with 5 % slack
    assert 0.7 * min(before, after) * 0.95 <= plan.budget <= 0.7 * max(before, after) * 1.05


def test_image_too_large_for_the_budget_is_translated_in_tiles(tmp_path, capsys):
    g = _generator(ngf=4)
    big = _noise_image(tmp_path / "in" / "big.png", 300, 200)
    small = _noise_image(tmp_path / "in" / "small.png", 60, 40, seed=1)
    # bytes: 300x200 needs 60_000 * 256 in one pass; beside its buffers (4_800_000) 128-px tiles fit
    budget = 8_000_000
    report = _run(g, [big, small], tmp_path / "out", memory_budget_gib=budget / 2**30)
    assert report.auto_tiled == [str(big)] and len(report.written) == 2
    x = from_uint8(np.array(load_image(str(big))))[0]
    expected = to_uint8(translate_tiled(g, x, tile=128, tile_overlap=0, batch_size=1))
    np.testing.assert_array_equal(_pixels(tmp_path / "out" / "big.png"), expected)
    assert not np.array_equal(_pixels(tmp_path / "out" / "big.png"), _pixels_untiled(g, x))
    err = capsys.readouterr().err
    assert "big.png: 300x200 needs about" in err and "128-px tiles" in err and "even for" not in err


def test_image_over_the_budget_even_in_tiles_is_translated_and_said_once(tmp_path, capsys):
    g = _generator(ngf=4)
    big = [_noise_image(tmp_path / "in" / f"big{i}.png", 300, 200, seed=i) for i in range(2)]
    report = _run(g, big, tmp_path / "out", memory_budget_gib=4_000_000 / 2**30)  # buffers alone: 4_800_000
    assert len(report.written) == 2 and report.auto_tiled == [str(p) for p in big]
    err = capsys.readouterr().err
    assert err.count("more than the 0.0 GiB budget leaves even for 128-px tiles; translating it anyway") == 1
    assert "Lower --max-side" in err


def _pixels_untiled(g, x):
    return to_uint8(translate_batch(g, [x])[0])


def test_budget_shrinks_batches_of_large_images(tmp_path):
    g = _generator(ngf=4)
    paths = [_noise_image(tmp_path / "in" / f"{i}.png", 64, 64, seed=i) for i in range(4)]
    seen = []
    g.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    _run(g, paths, tmp_path / "out", batch_size=4, memory_budget_gib=(2 * 64 * 64 * 256) / 2**30)
    assert seen == [2, 2]


def test_same_stem_inputs_are_renamed_and_listed(tmp_path):
    root = tmp_path / "in"
    first, second = _noise_image(root / "a.jpg", 16, 16, seed=1), _noise_image(root / "a.png", 16, 16, seed=2)
    report = _run(_generator(), [root], tmp_path / "out")
    assert report.renamed == [(str(second), str(tmp_path / "out" / "a_1.png"), str(first))]


def test_the_overwrite_message_names_the_input_that_would_be_replaced(tmp_path):
    root = tmp_path / "in"
    jpg, png = _noise_image(root / "a.jpg", 16, 16, seed=1), _noise_image(root / "a.png", 16, 16, seed=2)
    with pytest.raises(ValueError) as err:
        _run(_generator(), [jpg, png], root)  # a.jpg -> in/a.png, which is the second input
    assert str(err.value).startswith(f"translating {jpg} would write {png}, which is one of the inputs")


def test_an_empty_folder_is_skipped_with_its_reason(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    report = _run(_generator(), [tmp_path / "empty"], tmp_path / "out")
    assert report.written == [] and len(report.skipped) == 1
    assert report.skipped[0][0] == str(tmp_path / "empty") and report.skipped[0][1].startswith("no images")
    assert not (tmp_path / "out").exists()


def test_a_training_state_that_is_not_one_says_what_a_checkpoint_is(tmp_path):
    from scenimefy.stages.checkpoint import load_state

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "state.pt").write_text("garbage")
    with pytest.raises(ValueError, match=r"state\.pt is not a checkpoint: it is not a PyTorch weights file") as err:
        load_state(tmp_path / "ckpt")
    assert "config.yaml" in str(err.value)
    with pytest.raises(ValueError, match=r"state\.pt is missing; expected a training checkpoint directory"):
        load_state(tmp_path)


def test_results_convert_to_8_bits_band_by_band_exactly():
    from scenimefy.inference.translate import _to_uint8_bands

    y = torch.rand(3, 37, 11, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2  # beyond [-1, 1] too
    np.testing.assert_array_equal(_to_uint8_bands(y, rows=8), to_uint8(y))
