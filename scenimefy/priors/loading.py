"""Every pretrained prior, resolved from a local path, a cache directory or the hub.

The priors: CLIP ViT-B/32 (open_clip) and LPIPS-VGG16 for stage-1 fine-tuning, Mask2Former
Swin-B ADE20k (transformers) for stage-2 selection, the FID Inception-v3 for evaluation.
Each is resolved in the same order:

1. the explicit `priors.<field>` (a local file or directory), which must exist;
2. the file in the cache directory (`priors.cache_dir`, else $SCENIMEFY_CACHE, else
   ~/.cache/scenimefy), in the layout below;
3. a download into that cache directory, unless `priors.offline` is set.

A prior that cannot be resolved raises `PriorNotAvailable` (a `FileNotFoundError`) with one
line naming the file, where it was looked for and the fix. `download_weights` fills a
directory in exactly this layout, for air-gapped clusters:

    DIR/clip/<model>/<tag>/open_clip_model.safetensors   CLIP (any *.safetensors/.bin/.pt/.pth)
    DIR/lpips/v0.1/vgg.pth                               LPIPS linear heads
    DIR/hub/checkpoints/vgg16-397923af.pth               VGG16 ImageNet trunk (torchvision)
    DIR/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth   FID Inception (pytorch-fid)
    DIR/huggingface/models--facebook--mask2former-.../   Mask2Former (Hugging Face hub cache)

Nothing here imports open_clip, lpips, transformers or torchmetrics at import time, and
nothing downloads until a loader is called.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scenimefy.config import PriorsConfig

if TYPE_CHECKING:
    import lpips
    from torchmetrics.image.fid import FrechetInceptionDistance
    from transformers import Mask2FormerForUniversalSegmentation


# ----------------------------------------------------------------------------------------
# Cache directory and the error every loader raises


CACHE_ENV = "SCENIMEFY_CACHE"


def resolve_cache_dir(cfg: PriorsConfig) -> Path:
    """cfg.cache_dir, else $SCENIMEFY_CACHE, else ~/.cache/scenimefy."""
    root = cfg.cache_dir or os.environ.get(CACHE_ENV) or "~/.cache/scenimefy"
    return Path(root).expanduser()


class PriorNotAvailable(FileNotFoundError):
    """A pretrained prior is neither given, nor cached, nor downloadable (offline or failed)."""


def _not_available(what: str, looked_in: Sequence[Path], field: str, reason: str) -> PriorNotAvailable:
    places = ", ".join(str(p) for p in looked_in)
    return PriorNotAvailable(
        f"{what} not available ({reason}); looked for {places}. Fix: run "
        f"`scenimefy weights download --to DIR` on a machine with internet, then set "
        f"priors.cache_dir=DIR, or set priors.{field} to a local copy"
    )


def _explicit_path(field: str, value: str, kind: str = "file") -> Path:
    """The user's own copy, `priors.<field>=value`: its path, or PriorNotAvailable when it is missing."""
    path = Path(value).expanduser()
    if not (path.is_dir() if kind == "directory" else path.is_file()):
        raise PriorNotAvailable(
            f"priors.{field}={value!r}: no such {kind}. Fix: point priors.{field} to an existing "
            f"{kind}, or clear it to use priors.cache_dir"
        )
    return path


def _looks_like_path(value: str) -> bool:
    """A value the user meant as a local path rather than a tag or hub id."""
    return (
        os.path.isabs(value)
        or value.startswith((".", "~"))
        or value.count("/") > 1
        or Path(value).expanduser().exists()
    )


# ----------------------------------------------------------------------------------------
# Download primitives (the only functions that touch the network; tests replace them)


def _download_url(url: str, dst: Path, sha256_prefix: str | None = None) -> Path:
    """Fetch url to dst (atomically), checking the SHA-256 prefix when one is known."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(dst), hash_prefix=sha256_prefix, progress=True)
    return dst


def _hf_hub_download(repo_id: str, filename: str, local_dir: Path) -> Path:
    """One file of a hub repo, placed flat in local_dir."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, filename, local_dir=local_dir))


def _hf_snapshot_download(repo_id: str, cache_dir: Path, allow_patterns: list[str]) -> Path:
    """The files of a hub repo matching allow_patterns, in the hub cache layout."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=allow_patterns))


def _hub_sha256_prefix(filename: str) -> str | None:
    """torch hub names files `<name>-<sha256 prefix>.<ext>`."""
    match = torch.hub.HASH_REGEX.search(filename)
    return match.group(1) if match else None


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


# ----------------------------------------------------------------------------------------
# CLIP (open_clip): weights resolution, then the frozen embedder


CLIP_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _clip_dir(cfg: PriorsConfig) -> Path:
    model = cfg.clip_model.replace("/", "-")  # open_clip's own name cleaning
    return resolve_cache_dir(cfg) / "clip" / model / cfg.clip_pretrained


def _find_weights_file(directory: Path) -> Path | None:
    if not directory.is_dir():
        return None
    for suffix in CLIP_WEIGHT_SUFFIXES:  # safetensors first
        found = sorted(directory.glob(f"*{suffix}"))
        if found:
            return found[0]
    return None


def _clip_pretrained_is_path(value: str) -> bool:
    """open_clip tags never contain '/' nor end in a weights suffix."""
    return "/" in value or value.endswith(CLIP_WEIGHT_SUFFIXES) or _looks_like_path(value)


def _clip_tag_cfg(cfg: PriorsConfig) -> dict:
    import open_clip

    return open_clip.get_pretrained_cfg(cfg.clip_model.replace("/", "-"), cfg.clip_pretrained)


def _split_hf_hub(hf_hub: str) -> tuple[str, str]:
    """open_clip writes 'org/repo/' (default file) or 'org/repo/file.bin'."""
    parts = hf_hub.split("/")
    return "/".join(parts[:2]), "/".join(parts[2:])


def _download_clip(tag_cfg: dict, directory: Path) -> Path:
    """open_clip's sources for a tag, hub first (safetensors preferred), else the URL."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    if tag_cfg.get("hf_hub"):
        repo_id, filename = _split_hf_hub(tag_cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        if filename == HF_WEIGHTS_NAME:
            safe = HF_SAFE_WEIGHTS_NAME
        else:
            safe = str(Path(filename).with_suffix(".safetensors"))
        candidates = list(dict.fromkeys([safe, filename]))  # as open_clip: safetensors first
        errors = []
        for name in candidates:
            try:
                return _hf_hub_download(repo_id, name, directory)
            except Exception as e:  # noqa: BLE001 - the next candidate may exist
                errors.append(f"{name}: {e}")
        raise RuntimeError(f"hub repo {repo_id}: " + "; ".join(errors))
    url = tag_cfg["url"]
    filename = os.path.basename(url)
    if "openaipublic" in url:
        sha256 = url.split("/")[-2]
    elif "mlfoundations" in url:
        sha256 = os.path.splitext(filename)[0].split("-")[-1]
    else:
        sha256 = None
    return _download_url(url, directory / filename, sha256)


def resolve_clip_weights(cfg: PriorsConfig) -> Path:
    """The open_clip weights file: clip_pretrained as a path, else cache, else download."""
    value = cfg.clip_pretrained
    if _clip_pretrained_is_path(value):
        return _explicit_path("clip_pretrained", value)

    directory = _clip_dir(cfg)
    cached = _find_weights_file(directory)
    if cached is not None:
        return cached
    what = f"CLIP weights {cfg.clip_model}/{value}"
    if cfg.offline:
        raise _not_available(what, [directory / "open_clip_model.safetensors"], "clip_pretrained", "offline")
    tag_cfg = _clip_tag_cfg(cfg)
    if not tag_cfg:
        raise ValueError(
            f"priors.clip_pretrained={value!r} is neither a file nor an open_clip tag of "
            f"priors.clip_model={cfg.clip_model!r}: see open_clip.list_pretrained()"
        )
    try:
        return _download_clip(tag_cfg, directory)
    except Exception as e:  # noqa: BLE001 - any download failure is the same user problem
        raise _not_available(what, [directory], "clip_pretrained", f"download failed: {e}") from e


class ClipEmbedder(nn.Module):
    """Frozen CLIP image tower: images in [-1, 1] -> L2-normalised embeddings.

    Preprocessing as the stage-1 reference (OC train_oneshot.py): u = (x + 1) / 2, bicubic
    resize to the model's input size (align_corners=False, antialias optional), CLIP
    mean/std. No clamping. The parameters never train and the tower stays in eval mode even
    when a parent module calls .train(); gradients flow to the input images.
    """

    def __init__(
        self,
        visual: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        image_size: int | tuple[int, int],
        antialias: bool = False,
    ) -> None:
        super().__init__()
        self.visual = _freeze(visual)
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.antialias = antialias
        # Plain floats, not buffers: a parent's .to(bfloat16) must not round CLIP's mean/std.
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.eval()

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        image_size: int | tuple[int, int],
        antialias: bool = False,
    ) -> "ClipEmbedder":
        """Wrap an open_clip CLIP model (only its image tower is kept) or an image tower."""
        return cls(getattr(model, "visual", model), mean, std, image_size, antialias)

    def train(self, mode: bool = True) -> "ClipEmbedder":
        return super().train(False)  # a frozen prior: no dropout / patch dropout, ever

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, D) float32, unit L2 norm."""
        x = (images.float() + 1) / 2
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False, antialias=self.antialias)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        dtype = next(self.visual.parameters()).dtype
        features = self.visual(x.to(dtype))  # (B, D)
        return F.normalize(features.float(), dim=-1)


def load_clip(
    cfg: PriorsConfig,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    antialias: bool = False,
) -> ClipEmbedder:
    """The frozen CLIP image embedder of cfg.clip_model with cfg.clip_pretrained weights.

    With a tag, QuickGELU and mean/std come from open_clip's record of that tag. With an
    explicit file the architecture is cfg.clip_model as named: OpenAI weights then need the
    `-quickgelu` variant (e.g. ViT-B-32-quickgelu).
    """
    import open_clip

    weights = resolve_clip_weights(cfg)
    tag_cfg = {} if _clip_pretrained_is_path(cfg.clip_pretrained) else _clip_tag_cfg(cfg)
    preprocess = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
    model = open_clip.create_model(
        cfg.clip_model,
        pretrained=str(weights),
        force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
        force_preprocess_cfg=preprocess or None,
        device="cpu",
    )
    pp = open_clip.get_model_preprocess_cfg(model)
    embedder = ClipEmbedder.from_model(model, pp["mean"], pp["std"], pp["size"], antialias=antialias)
    return embedder.to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------
# LPIPS (VGG16 trunk + v0.1 linear heads)


VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"  # torchvision IMAGENET1K_V1


def _vgg16_url() -> str:
    try:
        from torchvision.models import VGG16_Weights

        return VGG16_Weights.IMAGENET1K_V1.url
    except ImportError:  # very old torchvision
        return VGG16_URL


def _hub_checkpoints(cfg: PriorsConfig) -> Path:
    """torch hub's layout under the cache dir (as if TORCH_HOME were the cache dir)."""
    return resolve_cache_dir(cfg) / "hub" / "checkpoints"


def resolve_lpips_heads(cfg: PriorsConfig) -> Path:
    """LPIPS v0.1 linear heads: lpips_weights, else the cache, else the lpips package copy."""
    if cfg.lpips_weights:
        return _explicit_path("lpips_weights", cfg.lpips_weights)
    cached = resolve_cache_dir(cfg) / "lpips" / "v0.1" / f"{cfg.lpips_net}.pth"
    if cached.is_file():
        return cached
    import lpips

    shipped = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{cfg.lpips_net}.pth"
    if not shipped.is_file():
        raise _not_available(f"LPIPS heads {cfg.lpips_net}", [cached, shipped], "lpips_weights", "not shipped")
    return shipped


def resolve_vgg16_weights(cfg: PriorsConfig) -> Path:
    """torchvision's VGG16 ImageNet file: vgg16_weights, else the cache, else download."""
    if cfg.vgg16_weights:
        return _explicit_path("vgg16_weights", cfg.vgg16_weights)
    url = _vgg16_url()
    cached = _hub_checkpoints(cfg) / os.path.basename(url)
    if cached.is_file():
        return cached
    if cfg.offline:
        raise _not_available("VGG16 ImageNet weights (LPIPS trunk)", [cached], "vgg16_weights", "offline")
    try:
        return _download_url(url, cached, _hub_sha256_prefix(cached.name))
    except Exception as e:  # noqa: BLE001
        reason = f"download of {url} failed: {e}"
        raise _not_available("VGG16 ImageNet weights", [cached], "vgg16_weights", reason) from e


def _load_lpips_trunk(model: nn.Module, path: Path) -> None:
    """torchvision's `features.<i>.*` keys into lpips' `slice<k>.<i>.*` (same index i)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    trunk = {}
    for name, _ in model.net.named_parameters():  # "slice1.0.weight"
        _, index, kind = name.split(".")
        key = f"features.{index}.{kind}"
        if key not in state:
            raise ValueError(f"{path} is not a torchvision VGG16 state dict: missing {key!r}")
        trunk[name] = state[key]
    model.net.load_state_dict(trunk, strict=True)


def _load_lpips_heads(model: nn.Module, path: Path) -> None:
    """The heads file stores `lin<k>.model.1.weight` (after a Dropout); ours has no Dropout."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for k, lin in enumerate(model.lins):
        key = next((f"lin{k}.model.{i}.weight" for i in (1, 0) if f"lin{k}.model.{i}.weight" in state), None)
        if key is None:
            raise ValueError(f"{path} is not an LPIPS v0.1 heads file: missing 'lin{k}.model.1.weight'")
        lin.model[-1].load_state_dict({"weight": state[key]}, strict=True)


def load_lpips(
    cfg: PriorsConfig,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> "lpips.LPIPS":
    """Frozen LPIPS v0.1 (cfg.lpips_net, VGG by default); inputs (B, 3, H, W) in [-1, 1].

    Built without lpips' own weight loading (which downloads the trunk through torchvision
    and loads the heads with strict=False), then both parts are loaded strictly from
    resolved files. The heads are built without Dropout: identical in eval, and a parent's
    .train() cannot switch dropout on.
    """
    import lpips

    if cfg.lpips_net not in ("vgg", "vgg16"):
        raise ValueError(f"priors.lpips_net={cfg.lpips_net!r}: only 'vgg' is supported (the paper's LPIPS-VGG)")
    heads, trunk = resolve_lpips_heads(cfg), resolve_vgg16_weights(cfg)
    with warnings.catch_warnings():  # torchvision's `pretrained=False` deprecation inside lpips
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(
            net="vgg", version="0.1", pretrained=False, pnet_rand=True, use_dropout=False, verbose=False
        )
    _load_lpips_trunk(model, trunk)
    _load_lpips_heads(model, heads)
    return _freeze(model).to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------
# Mask2Former (transformers)


MASK2FORMER_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _has_weights(directory: Path) -> bool:
    return any((directory / name).is_file() for name in MASK2FORMER_WEIGHT_FILES)


def check_mask2former_dir(directory: Path) -> None:
    """Raise ValueError unless directory is a transformers Mask2Former checkpoint."""
    config = directory / "config.json"
    if not config.is_file():
        raise ValueError(f"{directory} is not a Mask2Former checkpoint: missing config.json")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{directory} is not a Mask2Former checkpoint: unreadable config.json ({e})") from e
    if model_type != "mask2former":
        raise ValueError(
            f"{directory} is not a Mask2Former checkpoint: config.json has model_type={model_type!r}, "
            "expected 'mask2former'"
        )
    if not _has_weights(directory):
        raise ValueError(
            f"{directory} is not a Mask2Former checkpoint: no weights "
            f"(expected one of {', '.join(MASK2FORMER_WEIGHT_FILES)})"
        )


def _hf_cache(cfg: PriorsConfig) -> Path:
    return resolve_cache_dir(cfg) / "huggingface"


def _cached_snapshot(repo_id: str, cache_dir: Path) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir)
    return Path(config).parent if isinstance(config, str) else None


def resolve_mask2former(cfg: PriorsConfig) -> Path:
    """The Mask2Former checkpoint directory: a local dir, else the hub cache, else download."""
    value = cfg.mask2former
    if _looks_like_path(value):
        directory = _explicit_path("mask2former", value, kind="directory")
        check_mask2former_dir(directory)
        return directory

    cache = _hf_cache(cfg)
    snapshot = _cached_snapshot(value, cache)
    if snapshot is not None and _has_weights(snapshot):
        check_mask2former_dir(snapshot)
        return snapshot
    what = f"Mask2Former {value}"
    looked = [snapshot or cache / f"models--{value.replace('/', '--')}"]
    if cfg.offline:
        raise _not_available(what, looked, "mask2former", "offline")
    try:
        snapshot = _hf_snapshot_download(value, cache, ["*.json", "*.safetensors"])
        if not _has_weights(snapshot):  # an older repo with only pytorch_model.bin
            snapshot = _hf_snapshot_download(value, cache, ["*.json", "*.bin"])
    except Exception as e:  # noqa: BLE001
        raise _not_available(what, looked, "mask2former", f"download failed: {e}") from e
    check_mask2former_dir(snapshot)
    return snapshot


def load_mask2former(
    cfg: PriorsConfig,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> "Mask2FormerForUniversalSegmentation":
    """Frozen, eval Mask2FormerForUniversalSegmentation from cfg.mask2former."""
    from transformers import Mask2FormerForUniversalSegmentation

    directory = resolve_mask2former(cfg)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if any((directory / name).is_file() for name in MASK2FORMER_WEIGHT_FILES[:2]):
        kwargs["use_safetensors"] = True  # never the pickled .bin when safetensors are there
    # Resolved to a local directory already: never let transformers reach the hub.
    model = Mask2FormerForUniversalSegmentation.from_pretrained(str(directory), local_files_only=True, **kwargs)
    return _freeze(model).to(device)


# ----------------------------------------------------------------------------------------
# FID Inception-v3 (the TF-ported weights; torch-fidelity / torchmetrics network)


FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
# torch-fidelity ships the same file (same size and SHA-256) under another name.
FID_INCEPTION_ALIASES = ("weights-inception-2015-12-05-6726825d.pth",)
FID_INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
FID_INCEPTION_URLS = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
)


def load_inception(cfg: PriorsConfig) -> Path:
    """Path of the FID Inception weights: inception_weights, else the cache, else download."""
    if cfg.inception_weights:
        return _explicit_path("inception_weights", cfg.inception_weights)
    checkpoints = _hub_checkpoints(cfg)
    candidates = [checkpoints / name for name in (FID_INCEPTION_FILE, *FID_INCEPTION_ALIASES)]
    for path in candidates:
        if path.is_file():
            return path
    what = "FID Inception weights"
    if cfg.offline:
        raise _not_available(what, candidates[:1], "inception_weights", "offline")
    errors = []
    for url in FID_INCEPTION_URLS:
        try:
            return _download_url(url, candidates[0], FID_INCEPTION_SHA256)
        except Exception as e:  # noqa: BLE001 - try the mirror
            errors.append(f"{url}: {e}")
    raise _not_available(what, candidates[:1], "inception_weights", "download failed: " + "; ".join(errors))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_inception(path: str | os.PathLike, *, custom_ok: bool = False) -> Path:
    """`path` after checking its SHA-256 against the FID Inception file's; ValueError (one line) if it differs.

    Run at every use, not only after a download: a truncated copy, a swapped file on a shared
    volume or a different network would otherwise give FID/KID values silently incomparable
    with the published ones. `custom_ok` accepts another network under a name of its own (an
    explicit `priors.inception_weights` such as the demo's random network); a file under the
    FID file's own names must always match.
    """
    path = Path(path)
    got = file_sha256(path)
    if got == FID_INCEPTION_SHA256:
        return path
    if custom_ok and path.name not in (FID_INCEPTION_FILE, *FID_INCEPTION_ALIASES):
        return path
    raise ValueError(
        f"FID Inception weights {path}: SHA-256 {got[:16]}... is not the expected {FID_INCEPTION_SHA256[:16]}...; "
        f"the file is damaged or not the FID Inception file: delete it (`scenimefy weights download` fetches it "
        f"again) or set priors.inception_weights to the right file"
    )


def inception_for_use(cfg: PriorsConfig) -> Path:
    """`load_inception`'s file, its SHA-256 verified now (every caller that loads the weights uses this)."""
    return verify_inception(load_inception(cfg), custom_ok=bool(cfg.inception_weights))


def make_fid_metric(
    cfg: PriorsConfig,
    feature: int = 2048,
    device: str | torch.device = "cpu",
    antialias: bool = False,
    normalize: bool = False,
) -> "FrechetInceptionDistance":
    """torchmetrics FID on the local FID Inception weights (needs torch-fidelity).

    antialias=False keeps torch-fidelity's TF1-compatible bilinear resize to 299 (the
    standard FID); torchmetrics' own default (True) differs from it. normalize=False:
    images are uint8 in [0, 255] (torchmetrics truncates floats when normalize=True).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    weights = inception_for_use(cfg)
    metric = FrechetInceptionDistance(
        feature=feature,
        normalize=normalize,
        feature_extractor_weights_path=str(weights),
        antialias=antialias,
    )
    return metric.to(device)


# ----------------------------------------------------------------------------------------
# Pre-fetching everything for air-gapped clusters


def download_weights(cfg: PriorsConfig, to_dir: str | Path) -> list[Path]:
    """Fetch every prior into to_dir, in the layout the loaders read with cache_dir=to_dir.

    Fields set to explicit local paths are returned as they are (not copied). The LPIPS
    heads are copied from the lpips package so that to_dir is complete on its own.
    """
    to_dir = Path(to_dir).expanduser()
    fetch = dataclasses.replace(cfg, cache_dir=str(to_dir), offline=False)
    paths = [resolve_clip_weights(fetch), _copy_lpips_heads(fetch), resolve_vgg16_weights(fetch)]
    paths += [resolve_mask2former(fetch), load_inception(fetch)]
    return paths


def _copy_lpips_heads(cfg: PriorsConfig) -> Path:
    source = resolve_lpips_heads(cfg)
    if cfg.lpips_weights:
        return source
    target = resolve_cache_dir(cfg) / "lpips" / "v0.1" / f"{cfg.lpips_net}.pth"
    if source != target:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return target
