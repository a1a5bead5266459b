"""Tiny random instances of the real prior classes, written in the layouts `scenimefy.priors.loading` reads.

`scenimefy demo` and the tests need every prior (stage-1 CLIP and LPIPS losses, stage-2
Mask2Former selection, FID) on a machine with no downloads. These builders make the same
classes as production (open_clip CLIP, lpips.LPIPS's VGG16 trunk,
Mask2FormerForUniversalSegmentation with a Swin backbone, the FID Inception-v3) with random
weights and save them to files, so the real loaders run offline on them.

    cfg = tiny_priors_config(root)          # PriorsConfig, offline, every selected field local
    clip = load_clip(cfg)                    # ClipEmbedder over a 16-d tiny ViT

The tiny CLIP is written as an open_clip `local-dir:` folder (its architecture JSON beside the
weights), so any process can build it: Ray Train workers never see an architecture that was
registered in the driver's process only. `register_tiny_clip_config` still registers it by
name for in-process callers.

Nothing heavy is imported at module import (open_clip, lpips, transformers load on use).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from scenimefy.config import PriorsConfig

# ----------------------------------------------------------------------------------------
# CLIP: a tiny open_clip architecture

TINY_CLIP_MODEL = "scenimefy-tiny-vit"
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
}
TINY_CLIP_EMBED_DIM = TINY_CLIP_CONFIG["embed_dim"]
TINY_CLIP_IMAGE_SIZE = TINY_CLIP_CONFIG["vision_cfg"]["image_size"]
CLIP_DIR_CONFIG = "open_clip_config.json"  # what open_clip reads from a `local-dir:` folder
CLIP_DIR_WEIGHTS = "open_clip_model.safetensors"


def register_tiny_clip_config() -> str:
    """Add TINY_CLIP_MODEL to open_clip's model registry (once per process); its name."""
    import open_clip

    if TINY_CLIP_MODEL not in open_clip.list_models():
        config_dir = Path(tempfile.mkdtemp(prefix="scenimefy-open-clip-"))
        (config_dir / f"{TINY_CLIP_MODEL}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
        open_clip.add_model_config(config_dir)
    return TINY_CLIP_MODEL


def tiny_clip_model(seed: int = 0) -> torch.nn.Module:
    """A random open_clip CLIP of the tiny architecture (16-d embeddings, 32 px input)."""
    import open_clip

    register_tiny_clip_config()
    torch.manual_seed(seed)
    return open_clip.create_model(TINY_CLIP_MODEL, pretrained=None)


def write_tiny_clip_weights(path: Path, seed: int = 0) -> Path:
    """The tiny CLIP's state dict at path (.safetensors, or torch.save for .pt/.pth/.bin)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = tiny_clip_model(seed).state_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def write_tiny_clip_dir(directory: Path, seed: int = 0) -> tuple[str, str]:
    """An open_clip `local-dir:` folder of the tiny CLIP: (priors.clip_model, priors.clip_pretrained)."""
    directory = Path(directory).absolute()
    weights = write_tiny_clip_weights(directory / CLIP_DIR_WEIGHTS, seed)
    (directory / CLIP_DIR_CONFIG).write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG}))
    return f"local-dir:{directory}", str(weights)


# ----------------------------------------------------------------------------------------
# LPIPS: a random VGG16 trunk in torchvision's key layout


def write_random_vgg16_trunk(path: Path, seed: int = 0) -> Path:
    """torchvision VGG16 `features.*` keys with random values (the classifier is not needed)."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(seed)
    features = make_layers(cfgs["D"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def write_random_lpips_heads(path: Path, seed: int = 0) -> Path:
    """LPIPS v0.1 VGG heads in the file layout of lpips' weights/v0.1/vgg.pth."""
    generator = torch.Generator().manual_seed(seed)
    channels = (64, 128, 256, 512, 512)
    state = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator) for k, c in enumerate(channels)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


# ----------------------------------------------------------------------------------------
# Mask2Former: tiny Swin backbone, 150 ADE20k-sized labels


def tiny_mask2former_config(num_labels: int = 150, num_queries: int = 4):
    """Mask2FormerConfig small enough for CPU tests (GroupNorm(32) needs 32 channels)."""
    from transformers import Mask2FormerConfig, SwinConfig

    backbone = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return Mask2FormerConfig(
        backbone_config=backbone,
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        encoder_feedforward_dim=32,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
        dim_feedforward=32,
        num_queries=num_queries,
        num_labels=num_labels,
    )


def tiny_mask2former(seed: int = 0, **config_kwargs):
    """A random Mask2FormerForUniversalSegmentation of the tiny config, eval mode."""
    from transformers import Mask2FormerForUniversalSegmentation

    torch.manual_seed(seed)
    return Mask2FormerForUniversalSegmentation(tiny_mask2former_config(**config_kwargs)).eval()


def write_tiny_mask2former(directory: Path, seed: int = 0, **config_kwargs) -> Path:
    """save_pretrained of the tiny model: config.json + model.safetensors."""
    directory = Path(directory)
    tiny_mask2former(seed, **config_kwargs).save_pretrained(directory)
    return directory


def write_hf_cache_snapshot(cache_dir: Path, repo_id: str, files: dict[str, Path], commit: str = "0" * 40) -> Path:
    """A Hugging Face hub cache entry (refs/main + snapshots/<commit>/) holding copies of files."""
    repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name, source in files.items():
        (snapshot / name).write_bytes(Path(source).read_bytes())
    return snapshot


# ----------------------------------------------------------------------------------------
# FID Inception: torch-fidelity's network, random weights (the real size, ~96 MB)


def write_random_fid_inception(path: Path, seed: int = 0) -> Path:
    """A random state dict with the keys and shapes of the FID Inception-v3 (1008 classes).

    torchvision's Inception3 without aux logits has exactly the keys of pytorch-fid's and
    torch-fidelity's FID network, and it can be built without downloading anything.
    """
    from torchvision.models.inception import Inception3

    torch.manual_seed(seed)
    net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


# ----------------------------------------------------------------------------------------
# Everything at once


def tiny_priors_config(
    root: Path,
    clip: bool = True,
    lpips: bool = True,
    mask2former: bool = True,
    inception: bool = False,
    seed: int = 0,
) -> PriorsConfig:
    """An offline PriorsConfig whose selected fields point to tiny random priors under root.

    CLIP: root/clip/ (a `local-dir:` folder, tiny ViT); LPIPS: random heads + random VGG16
    trunk; Mask2Former: root/mask2former/ (imports transformers, ~5 s); Inception: ~96 MB of
    random weights, hence off by default. Fields not selected keep their defaults, which fail
    offline with PriorNotAvailable.
    """
    root = Path(root).absolute()
    cfg = PriorsConfig(cache_dir=str(root / "cache"), offline=True)
    if clip:
        cfg.clip_model, cfg.clip_pretrained = write_tiny_clip_dir(root / "clip", seed)
    if lpips:
        cfg.lpips_weights = str(write_random_lpips_heads(root / "lpips_vgg.pth", seed))
        cfg.vgg16_weights = str(write_random_vgg16_trunk(root / "vgg16_trunk.pth", seed))
    if mask2former:
        cfg.mask2former = str(write_tiny_mask2former(root / "mask2former", seed))
    if inception:
        cfg.inception_weights = str(write_random_fid_inception(root / "fid_inception.pth", seed))
    return cfg
