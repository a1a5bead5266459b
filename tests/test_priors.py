"""Resolution and loading of the pretrained priors, offline, on tiny random models of the real classes."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from tiny_priors import (  # noqa: E402
    TINY_CLIP_EMBED_DIM,
    TINY_CLIP_IMAGE_SIZE,
    register_tiny_clip_config,
    tiny_clip_model,
    write_hf_cache_snapshot,
    write_random_fid_inception,
    write_random_lpips_heads,
    write_random_vgg16_trunk,
    write_tiny_clip_weights,
    write_tiny_mask2former,
)

from scenimefy.config import PriorsConfig  # noqa: E402
from scenimefy.priors import loading as priors  # noqa: E402
from scenimefy.priors.loading import (  # noqa: E402
    FID_INCEPTION_FILE,
    ClipEmbedder,
    PriorNotAvailable,
    download_weights,
    load_clip,
    load_inception,
    load_lpips,
    load_mask2former,
    make_fid_metric,
    resolve_cache_dir,
    resolve_clip_weights,
    resolve_lpips_heads,
    resolve_mask2former,
    resolve_vgg16_weights,
)

M2F_HUB_ID = PriorsConfig().mask2former


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any test reaching a download primitive fails, unless it replaces them itself."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    for name in ("_download_url", "_hf_hub_download", "_hf_snapshot_download"):
        monkeypatch.setattr(priors, name, refuse)
    monkeypatch.delenv(priors.CACHE_ENV, raising=False)


def offline_cfg(tmp_path: Path, **fields) -> PriorsConfig:
    return PriorsConfig(cache_dir=str(tmp_path / "cache"), offline=True, **fields)


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> Path:
    return write_tiny_clip_weights(tmp_path_factory.mktemp("clip") / "tiny.safetensors")


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lpips")
    return write_random_lpips_heads(root / "heads.pth"), write_random_vgg16_trunk(root / "vgg16.pth")


@pytest.fixture(scope="module")
def m2f_dir(tmp_path_factory) -> Path:
    return write_tiny_mask2former(tmp_path_factory.mktemp("m2f") / "tiny")


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory) -> Path:
    return write_random_fid_inception(tmp_path_factory.mktemp("fid") / "inception.pth")


@pytest.fixture(scope="module")
def clip(clip_file) -> ClipEmbedder:
    return load_clip(PriorsConfig(offline=True, clip_model=register_tiny_clip_config(), clip_pretrained=str(clip_file)))


# ----------------------------------------------------------------------------------------
# Cache directory, import hygiene


def test_cache_dir_is_config_then_env_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_cache_dir(PriorsConfig()) == tmp_path / "home" / ".cache" / "scenimefy"
    monkeypatch.setenv(priors.CACHE_ENV, str(tmp_path / "env"))
    assert resolve_cache_dir(PriorsConfig()) == tmp_path / "env"
    assert resolve_cache_dir(PriorsConfig(cache_dir=str(tmp_path / "cfg"))) == tmp_path / "cfg"


def test_importing_priors_loads_no_prior_library():
    code = (
        "import sys, scenimefy.priors.loading; "
        "print([m for m in ('open_clip', 'lpips', 'transformers', 'torchmetrics', 'torch_fidelity') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_prior_not_available_is_a_file_not_found_error():
    assert issubclass(PriorNotAvailable, FileNotFoundError)


# ----------------------------------------------------------------------------------------
# CLIP


def test_load_clip_from_explicit_file_offline(clip):
    import open_clip

    assert isinstance(clip, ClipEmbedder)
    assert isinstance(clip.visual, open_clip.transformer.VisionTransformer)
    assert clip.image_size == (TINY_CLIP_IMAGE_SIZE, TINY_CLIP_IMAGE_SIZE)
    assert not clip.training and not any(p.requires_grad for p in clip.parameters())


def test_load_clip_from_cache_dir_layout(tmp_path):
    cfg = offline_cfg(tmp_path, clip_model=register_tiny_clip_config(), clip_pretrained="random")
    cached_dir = tmp_path / "cache" / "clip" / cfg.clip_model / "random"
    cached = write_tiny_clip_weights(cached_dir / "open_clip_model.safetensors")
    assert resolve_clip_weights(cfg) == cached
    assert load_clip(cfg)(torch.zeros(1, 3, 32, 32)).shape == (1, TINY_CLIP_EMBED_DIM)


def test_clip_offline_without_cached_file_names_the_file(tmp_path):
    cfg = offline_cfg(tmp_path, clip_model="ViT-B-32", clip_pretrained="openai")
    expected = tmp_path / "cache" / "clip" / "ViT-B-32" / "openai" / "open_clip_model.safetensors"
    with pytest.raises(PriorNotAvailable, match=f"offline.*{expected}.*scenimefy weights download"):
        load_clip(cfg)


def test_clip_explicit_missing_file_names_it(tmp_path):
    missing = tmp_path / "nowhere" / "clip.pt"
    with pytest.raises(PriorNotAvailable, match=f"priors.clip_pretrained='{missing}'"):
        resolve_clip_weights(PriorsConfig(clip_pretrained=str(missing)))


def test_clip_tag_sets_quick_gelu_and_mean_std(tmp_path, monkeypatch):
    import open_clip

    cfg = offline_cfg(tmp_path, clip_model=register_tiny_clip_config(), clip_pretrained="tagged")
    write_tiny_clip_weights(tmp_path / "cache" / "clip" / cfg.clip_model / "tagged" / "open_clip_model.safetensors")
    tag = {"quick_gelu": True, "mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}
    monkeypatch.setattr(priors, "_clip_tag_cfg", lambda cfg: tag)
    clip = load_clip(cfg)
    assert isinstance(clip.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert clip.mean == pytest.approx(tag["mean"])
    assert clip.std == pytest.approx(tag["std"])


def test_clip_mean_std_come_from_the_model_preprocess_config(clip):
    import open_clip

    assert clip.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert clip.std == pytest.approx(open_clip.OPENAI_DATASET_STD)


def test_clip_embeddings_are_unit_norm_for_any_input_size(clip):
    images = torch.rand(3, 3, 48, 40) * 2 - 1
    embeddings = clip(images)
    assert embeddings.shape == (3, TINY_CLIP_EMBED_DIM)
    assert embeddings.norm(dim=-1) == pytest.approx(torch.ones(3), abs=1e-5)


def test_clip_preprocessing_is_resize_then_clip_normalisation():
    model = tiny_clip_model(seed=1)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    clip = ClipEmbedder.from_model(model, mean, std, TINY_CLIP_IMAGE_SIZE)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    u = torch.nn.functional.interpolate((images + 1) / 2, size=(32, 32), mode="bicubic", align_corners=False)
    u = (u - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.encode_image(u, normalize=True)
        assert torch.allclose(clip(images), expected, atol=1e-6)


def test_clip_gradient_reaches_images_but_not_clip_parameters(clip):
    images = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    clip(images).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())


def test_clip_distance_of_an_image_with_itself_is_zero(clip):
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    d_clip = 1 - (clip(images) * clip(images.clone())).sum(dim=-1)
    assert d_clip == pytest.approx(torch.zeros(2), abs=1e-6)


def test_clip_stays_in_eval_mode_inside_a_training_parent(clip):
    parent = torch.nn.ModuleDict({"clip": clip}).train()
    assert not parent["clip"].training and not parent["clip"].visual.training


def test_clip_dtype_is_configurable(clip_file):
    import open_clip

    cfg = PriorsConfig(offline=True, clip_model=register_tiny_clip_config(), clip_pretrained=str(clip_file))
    clip = load_clip(cfg, dtype=torch.bfloat16)
    assert next(clip.visual.parameters()).dtype == torch.bfloat16
    assert clip.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN, abs=1e-7)  # not rounded to bf16
    assert clip(torch.zeros(1, 3, 32, 32)).dtype == torch.float32


# ----------------------------------------------------------------------------------------
# LPIPS


def test_load_lpips_from_local_files_offline(tmp_path, lpips_files):
    import lpips

    heads, trunk = lpips_files
    model = load_lpips(offline_cfg(tmp_path, lpips_weights=str(heads), vgg16_weights=str(trunk)))
    assert isinstance(model, lpips.LPIPS)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    vgg = torch.load(trunk)
    assert torch.equal(getattr(model.net.slice1, "0").weight, vgg["features.0.weight"])
    assert torch.equal(getattr(model.net.slice5, "28").bias, vgg["features.28.bias"])
    assert torch.equal(model.lin4.model[-1].weight, torch.load(heads)["lin4.model.1.weight"])

    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    distance = model(x, y)
    assert distance.shape == (2, 1, 1, 1)
    distance.sum().backward()
    assert x.grad.abs().sum() > 0
    assert model(y, y).abs().max() == 0


def test_lpips_heads_default_to_the_lpips_package_copy(tmp_path):
    import lpips

    shipped = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    assert resolve_lpips_heads(offline_cfg(tmp_path)) == shipped


def test_lpips_heads_in_the_cache_dir_win_over_the_package_copy(tmp_path):
    cached = write_random_lpips_heads(tmp_path / "cache" / "lpips" / "v0.1" / "vgg.pth")
    assert resolve_lpips_heads(offline_cfg(tmp_path)) == cached


def test_vgg16_from_the_cache_dir_hub_layout(tmp_path, lpips_files):
    cached = tmp_path / "cache" / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    cached.symlink_to(lpips_files[1])
    assert resolve_vgg16_weights(offline_cfg(tmp_path)) == cached


def test_lpips_offline_without_vgg16_names_the_file(tmp_path):
    with pytest.raises(PriorNotAvailable, match="vgg16-397923af.pth"):
        load_lpips(offline_cfg(tmp_path))


def test_lpips_rejects_a_trunk_file_that_is_not_vgg16(tmp_path, lpips_files):
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="missing 'features.0.weight'"):
        load_lpips(offline_cfg(tmp_path, vgg16_weights=str(wrong)))


# ----------------------------------------------------------------------------------------
# Mask2Former


def test_load_mask2former_from_local_dir_offline(tmp_path, m2f_dir):
    from transformers import Mask2FormerForUniversalSegmentation

    model = load_mask2former(offline_cfg(tmp_path, mask2former=str(m2f_dir)))
    assert isinstance(model, Mask2FormerForUniversalSegmentation)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        out = model(pixel_values=torch.randn(2, 3, 64, 64))
    assert out.class_queries_logits.shape == (2, 4, 151)
    assert out.masks_queries_logits.shape == (2, 4, 16, 16)


def test_load_mask2former_from_the_hub_cache_offline(tmp_path, m2f_dir):
    files = {name: m2f_dir / name for name in ("config.json", "model.safetensors")}
    snapshot = write_hf_cache_snapshot(tmp_path / "cache" / "huggingface", M2F_HUB_ID, files)
    cfg = offline_cfg(tmp_path)
    assert resolve_mask2former(cfg) == snapshot
    assert load_mask2former(cfg, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_mask2former_offline_without_snapshot_names_the_repo(tmp_path):
    with pytest.raises(PriorNotAvailable, match=f"Mask2Former {M2F_HUB_ID}.*offline.*models--facebook--"):
        load_mask2former(offline_cfg(tmp_path))


def test_mask2former_explicit_missing_dir_names_it(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(PriorNotAvailable, match=f"priors.mask2former='{missing}': no such directory"):
        load_mask2former(offline_cfg(tmp_path, mask2former=str(missing)))


@pytest.mark.parametrize(
    ("config", "weights", "message"),
    [
        (None, True, "missing config.json"),
        ({"model_type": "swin"}, True, "config.json has model_type='swin', expected 'mask2former'"),
        ({"model_type": "mask2former"}, False, "no weights"),
    ],
)
def test_a_directory_that_is_not_mask2former_raises_naming_it(tmp_path, config, weights, message):
    directory = tmp_path / "not-m2f"
    directory.mkdir()
    if config is not None:
        (directory / "config.json").write_text(json.dumps(config))
    if weights:
        (directory / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=f"{directory} is not a Mask2Former checkpoint: {message}"):
        load_mask2former(offline_cfg(tmp_path, mask2former=str(directory)))


# ----------------------------------------------------------------------------------------
# FID Inception


def test_inception_explicit_path_then_cache_then_torch_fidelity_name(tmp_path):
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"x")
    assert load_inception(offline_cfg(tmp_path, inception_weights=str(explicit))) == explicit

    checkpoints = tmp_path / "cache" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    alias = checkpoints / "weights-inception-2015-12-05-6726825d.pth"
    alias.write_bytes(b"x")
    assert load_inception(offline_cfg(tmp_path)) == alias
    (checkpoints / FID_INCEPTION_FILE).write_bytes(b"x")
    assert load_inception(offline_cfg(tmp_path)) == checkpoints / FID_INCEPTION_FILE


def test_inception_offline_without_file_names_it(tmp_path):
    with pytest.raises(PriorNotAvailable, match=f"offline.*{FID_INCEPTION_FILE}"):
        load_inception(offline_cfg(tmp_path))


def test_fid_metric_runs_on_local_inception_weights(tmp_path, inception_file):
    pytest.importorskip("torch_fidelity")
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = make_fid_metric(offline_cfg(tmp_path, inception_weights=str(inception_file)), feature=64)
    assert isinstance(metric, FrechetInceptionDistance)
    generator = torch.Generator().manual_seed(0)
    metric.update(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=generator), real=True)
    metric.update(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=generator), real=False)
    assert torch.isfinite(metric.compute())


# ----------------------------------------------------------------------------------------
# download_weights: the layout the loaders read, with the network replaced


@pytest.fixture
def fake_downloads(monkeypatch):
    """Download primitives that write placeholder files where the real ones would."""
    calls = []

    def download_url(url, dst, sha256_prefix=None):
        calls.append(("url", url, sha256_prefix))
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(b"weights")
        return dst

    def hf_hub_download(repo_id, filename, local_dir):
        calls.append(("hf_file", repo_id, filename))
        (local_dir / filename).parent.mkdir(parents=True, exist_ok=True)
        (local_dir / filename).write_bytes(b"weights")
        return local_dir / filename

    def hf_snapshot_download(repo_id, cache_dir, allow_patterns):
        calls.append(("hf_snapshot", repo_id, tuple(allow_patterns)))
        source = cache_dir.parent / "fake-remote"
        source.mkdir(parents=True, exist_ok=True)
        (source / "config.json").write_text(json.dumps({"model_type": "mask2former"}))
        (source / "model.safetensors").write_bytes(b"weights")
        files = {name: source / name for name in ("config.json", "model.safetensors")}
        return write_hf_cache_snapshot(cache_dir, repo_id, files)

    monkeypatch.setattr(priors, "_download_url", download_url)
    monkeypatch.setattr(priors, "_hf_hub_download", hf_hub_download)
    monkeypatch.setattr(priors, "_hf_snapshot_download", hf_snapshot_download)
    return calls


def test_download_weights_fills_the_layout_the_loaders_read(tmp_path, fake_downloads):
    to_dir = tmp_path / "weights"
    cfg = PriorsConfig(offline=True)  # download_weights ignores offline: it is the download
    paths = download_weights(cfg, to_dir)

    commit = "0" * 40
    m2f_repo = to_dir / "huggingface" / f"models--{M2F_HUB_ID.replace('/', '--')}"
    assert paths == [
        to_dir / "clip" / "ViT-B-32" / "openai" / "open_clip_model.safetensors",
        to_dir / "lpips" / "v0.1" / "vgg.pth",
        to_dir / "hub" / "checkpoints" / "vgg16-397923af.pth",
        m2f_repo / "snapshots" / commit,
        to_dir / "hub" / "checkpoints" / FID_INCEPTION_FILE,
    ]
    assert ("hf_file", "timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors") in fake_downloads
    assert ("url", "https://download.pytorch.org/models/vgg16-397923af.pth", "397923af") in fake_downloads
    inception_calls = [c for c in fake_downloads if c[0] == "url" and c[1].endswith(FID_INCEPTION_FILE)]
    assert inception_calls and inception_calls[0][2] == priors.FID_INCEPTION_SHA256

    # The same directory, offline and with no network, resolves every prior to those files.
    cluster = dataclasses.replace(cfg, cache_dir=str(to_dir), offline=True)
    fake_downloads.clear()
    assert resolve_clip_weights(cluster) == paths[0]
    assert resolve_lpips_heads(cluster) == paths[1]
    assert resolve_vgg16_weights(cluster) == paths[2]
    assert resolve_mask2former(cluster) == paths[3]
    assert load_inception(cluster) == paths[4]
    assert fake_downloads == []


def test_download_weights_is_idempotent(tmp_path, fake_downloads):
    download_weights(PriorsConfig(), tmp_path / "weights")
    fake_downloads.clear()
    download_weights(PriorsConfig(), tmp_path / "weights")
    assert fake_downloads == []


def test_a_failed_download_raises_prior_not_available(tmp_path, monkeypatch):
    def unreachable(url, dst, sha256_prefix=None):
        raise OSError("Name or service not known")

    monkeypatch.setattr(priors, "_download_url", unreachable)
    cfg = PriorsConfig(cache_dir=str(tmp_path), offline=False)
    with pytest.raises(PriorNotAvailable, match="download of .*vgg16-397923af.pth failed: Name or service"):
        resolve_vgg16_weights(cfg)
    with pytest.raises(PriorNotAvailable, match="FID Inception weights .*download failed"):
        load_inception(cfg)


def test_clip_download_falls_back_from_safetensors_to_the_pickle(tmp_path, fake_downloads, monkeypatch):
    fake = priors._hf_hub_download

    def no_safetensors(repo_id, filename, local_dir):
        if filename.endswith(".safetensors"):
            raise OSError("404")
        return fake(repo_id, filename, local_dir)

    monkeypatch.setattr(priors, "_hf_hub_download", no_safetensors)
    path = resolve_clip_weights(PriorsConfig(cache_dir=str(tmp_path)))
    assert path == tmp_path / "clip" / "ViT-B-32" / "openai" / "open_clip_pytorch_model.bin"


def test_mask2former_download_falls_back_to_bin_weights(tmp_path, fake_downloads, monkeypatch):
    fake = priors._hf_snapshot_download

    def bin_only(repo_id, cache_dir, allow_patterns):
        snapshot = fake(repo_id, cache_dir, allow_patterns)
        if "*.bin" in allow_patterns:
            (snapshot / "pytorch_model.bin").write_bytes(b"weights")
        (snapshot / "model.safetensors").unlink(missing_ok=True)
        return snapshot

    monkeypatch.setattr(priors, "_hf_snapshot_download", bin_only)
    snapshot = resolve_mask2former(PriorsConfig(cache_dir=str(tmp_path)))
    assert (snapshot / "pytorch_model.bin").is_file()
    assert [c[2] for c in fake_downloads] == [("*.json", "*.safetensors"), ("*.json", "*.bin")]
