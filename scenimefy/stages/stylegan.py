"""Stages 0 and 1: StyleGAN2 pretraining (G_s) and semantic-constrained fine-tuning (G_s -> G_t).

`pretrain_step` is rosinality's algorithm box for one batch: D step with style mixing, lazy R1
at its interval, G step, lazy path length at its interval, EMA. `finetune_step` is the paper's
stage 1 (docs/method.md): the same D step and R1, then a G step in which the frozen G_s and the partly trainable
G_t see the same z, inject index and per-layer noise, with
``L = L_GAN + lambda_global (D_CLIP + lambda_lpips LPIPS) + lambda_patch L_patch`` (paper Eq. 3).
`train_pretrain` / `train_finetune` are the worker loops around them: build, resume, iterate
the data stream, then the shared tail of `scenimefy.stages.loop` (log, sample, checkpoint,
report). Neither imports Ray or MLflow; the cluster comes in through a `WorkerContext`.

Randomness of a step comes only from ``checkpoint.step_generator(seed, rank, step)``: data
augmentation, and a `StepNoise` built from it (latents, inject index, noise maps, the
path-length probe, patch corners), so N steps equal k steps + resume + N - k steps. Tests
inject their own `StepNoise` into `pretrain_step` / `finetune_step`.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from scenimefy.config import Config, FinetuneConfig, PretrainConfig, RunConfig, StyleGANConfig, dump_yaml, to_dict
from scenimefy.data.images import image_grid, to_uint8
from scenimefy.data.streams import BatchSource, Stream, StreamPosition
from scenimefy.data.transforms import random_crop_flip
from scenimefy.losses.clip_losses import clip_distance, clip_patch_nce, random_patch_corners
from scenimefy.losses.stylegan import (
    accumulate_ema,
    d_logistic_loss,
    ema_beta,
    g_nonsaturating_loss,
    lazy_regularization_adam_params,
    path_length_penalty,
    r1_penalty,
)
from scenimefy.models.rosinality import build_from_rosinality, load_rosinality_checkpoint, save_rosinality_checkpoint
from scenimefy.models.stylegan2 import Discriminator, Generator, freeze_for_finetuning
from scenimefy.models.utils import set_requires_grad
from scenimefy.stages import checkpoint as ckpt
from scenimefy.stages.checkpoint import STYLEGAN_SNAPSHOT_FILE
from scenimefy.stages.context import (
    WorkerContext,
    assert_ranks_identical,
    gather_per_rank,
    own_entry,
    rank_checksums,
)
from scenimefy.stages.host import configure_process
from scenimefy.stages.loop import Cadence, StageLoop, report_metrics

ARCH_FIELDS = ("size", "latent_dim", "n_mlp", "channel_multiplier", "channel_base", "channel_max")
STDDEV_GROUP = Discriminator.stddev_group
SAMPLE_GRID = (4, 4)  # pretraining sample grid: rows x columns of G_ema(z_fixed)
SAMPLE_PAIRS = 8  # fine-tuning sample grid: rows of (G_s(w), G_t(w))


# ----------------------------------------------------------------------------------------
# Networks and optimisers


def build_generator(s: StyleGANConfig) -> Generator:
    return Generator(
        s.size,
        s.latent_dim,
        s.n_mlp,
        channel_multiplier=s.channel_multiplier,
        channel_base=s.channel_base,
        channel_max=s.channel_max,
    )


def build_discriminator(s: StyleGANConfig) -> Discriminator:
    return Discriminator(
        s.size, channel_multiplier=s.channel_multiplier, channel_base=s.channel_base, channel_max=s.channel_max
    )


def build_optimizers(
    G: nn.Module,
    D: nn.Module,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    g_reg_every: int,
    d_reg_every: int,
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for G (its trainable parameters only) and D, with the lazy-regularisation correction
    ``lr * k/(k+1)``, ``betas ** (k/(k+1))`` for each network's interval k (StyleGAN2 paper, Appendix B)."""
    g_lr, g_betas = lazy_regularization_adam_params(lr, (beta1, beta2), g_reg_every)
    d_lr, d_betas = lazy_regularization_adam_params(lr, (beta1, beta2), d_reg_every)
    g_params = [p for p in G.parameters() if p.requires_grad]
    g_optim = torch.optim.Adam(g_params, lr=g_lr, betas=g_betas, eps=1e-8)
    d_optim = torch.optim.Adam(D.parameters(), lr=d_lr, betas=d_betas, eps=1e-8)
    return g_optim, d_optim


def check_batch_size(batch_size_per_worker: int, key: str) -> None:
    """The discriminator's minibatch-stddev groups need B < 4 or B a multiple of 4."""
    b = batch_size_per_worker
    if b < 1 or (b > STDDEV_GROUP and b % STDDEV_GROUP):
        raise ValueError(
            f"{key}={b}: the discriminator's minibatch-stddev groups {STDDEV_GROUP} images, so the "
            f"per-worker batch must be 1..{STDDEV_GROUP} or a multiple of {STDDEV_GROUP}"
        )


@dataclass
class StyleGANNets:
    """Networks of one StyleGAN training run and their optimisers.

    ``G`` (G_s while pretraining, G_t while fine-tuning) and ``D`` may be DDP-wrapped; ``G_ema``
    and ``G_s`` never are. ``trainable``: names of G's trained parameters (None = all), the set
    the EMA averages. ``mean_path_length``: the running target of the path-length penalty
    (per rank, as rosinality).
    """

    G: nn.Module
    D: nn.Module
    G_ema: Generator
    g_optim: torch.optim.Optimizer
    d_optim: torch.optim.Optimizer
    G_s: Generator | None = None  # frozen source generator (fine-tuning only)
    trainable: list[str] | None = None
    mean_path_length: Tensor = field(default_factory=lambda: torch.zeros(()))


# ----------------------------------------------------------------------------------------
# Randomness of a step


def device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from the step's CPU generator (big draws stay on the device)."""
    seed = int(torch.randint(2**62, (), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def mixing_styles(
    batch: int, latent_dim: int, *, mixing_prob: float, n_latent: int, generator: torch.Generator
) -> tuple[list[Tensor], int | None]:
    """z for one generator call: with probability ``mixing_prob`` two z's and the layer index
    where the second takes over (U{1..n_latent-1}), else one z and None. (B, latent_dim) each."""
    device = generator.device
    mix = mixing_prob > 0 and float(torch.rand((), generator=generator, device=device)) < mixing_prob
    z = torch.randn(2 if mix else 1, batch, latent_dim, generator=generator, device=device)
    inject = int(torch.randint(1, n_latent, (), generator=generator, device=device)) if mix else None
    return list(z.unbind(0)), inject


class StepNoise:
    """Where a StyleGAN step takes its random inputs: z with style mixing, per-layer noise maps,
    the path-length probe and the L_patch corners.

    The default draws them in the order the step asks: z, noise and probe from a device generator
    seeded from the step's CPU generator, the corners from the CPU generator itself. A test
    passes a subclass that returns fixed (or recorded) values instead.
    """

    def __init__(self, generator: torch.Generator, device: torch.device) -> None:
        self.cpu = generator
        self.device = device_generator(generator, device)

    def styles(
        self, batch: int, latent_dim: int, *, mixing_prob: float, n_latent: int
    ) -> tuple[list[Tensor], int | None]:
        """z list and inject index of one generator call (see `mixing_styles`)."""
        return mixing_styles(batch, latent_dim, mixing_prob=mixing_prob, n_latent=n_latent, generator=self.device)

    def noise(self, G: Generator, batch: int) -> list[Tensor]:
        """Per-layer noise maps for one call of `G` (on G's device)."""
        return G.make_noise(batch, generator=self.device)

    def probe(self, shape: torch.Size) -> Tensor:
        """The path-length penalty's random image-space direction (before scaling)."""
        return torch.randn(shape, generator=self.device, device=self.device.device)

    def patch_corners(self, size: int, patch_size: int, count: int) -> Tensor:
        """Top-left corners of L_patch's crops (see `random_patch_corners`)."""
        return random_patch_corners(size, patch_size, count, self.cpu)


def _synthesize(G: nn.Module, batch: int, *, mixing_prob: float, noise: StepNoise, **kwargs: Any):
    """G(mixed z, inject index, per-layer noise), everything taken from ``noise``."""
    bare = ckpt.unwrap(G)
    styles, inject = noise.styles(batch, bare.style_dim, mixing_prob=mixing_prob, n_latent=bare.n_latent)
    return G(styles, noise=noise.noise(bare, batch), inject_index=inject, **kwargs)


# ----------------------------------------------------------------------------------------
# The pieces of a step (rosinality train.py, one named function each)


def discriminator_step(
    nets: StyleGANNets, real: Tensor, *, mixing_prob: float, noise: StepNoise, amp: Any
) -> dict[str, float]:
    """D update on ``softplus(D(G(z))) + softplus(-D(x))``; G runs without gradients."""
    set_requires_grad(nets.D, True)
    with torch.no_grad(), amp:
        fake, _ = _synthesize(ckpt.unwrap(nets.G), real.shape[0], mixing_prob=mixing_prob, noise=noise)
    with amp:
        fake_pred = nets.D(fake).float()
        real_pred = nets.D(real).float()
        loss = d_logistic_loss(real_pred, fake_pred)
    nets.d_optim.zero_grad(set_to_none=True)
    loss.backward()
    nets.d_optim.step()
    return {"loss_D": loss.item(), "real_score": real_pred.mean().item(), "fake_score": fake_pred.mean().item()}


def r1_step(nets: StyleGANNets, real: Tensor, *, r1_gamma: float, d_reg_every: int) -> dict[str, float]:
    """Lazy R1 on reals, weighted ``gamma / 2 * interval`` (fp32; double backward)."""
    real = real.detach().requires_grad_(True)
    real_pred = nets.D(real)
    r1 = r1_penalty(real_pred, real)
    # The zero-weighted output keeps every D parameter in the graph (DDP reduction; docs/ray.md).
    loss = r1_gamma / 2 * r1 * d_reg_every + 0 * real_pred.sum()
    nets.d_optim.zero_grad(set_to_none=True)
    loss.backward()
    nets.d_optim.step()
    return {"r1": r1.item()}


def generator_step(
    nets: StyleGANNets, batch: int, *, mixing_prob: float, noise: StepNoise, amp: Any
) -> dict[str, float]:
    """G update on the non-saturating loss ``softplus(-D(G(z)))``; D is frozen and unwrapped."""
    set_requires_grad(nets.D, False)
    D = ckpt.unwrap(nets.D)
    with amp:
        fake, _ = _synthesize(nets.G, batch, mixing_prob=mixing_prob, noise=noise)
        loss = g_nonsaturating_loss(D(fake).float())
    nets.g_optim.zero_grad(set_to_none=True)
    loss.backward()
    nets.g_optim.step()
    return {"loss_G": loss.item()}


def path_length_step(
    nets: StyleGANNets,
    batch: int,
    *,
    path_weight: float,
    g_reg_every: int,
    path_batch_shrink: int,
    path_decay: float,
    mixing_prob: float,
    noise: StepNoise,
) -> dict[str, float]:
    """Lazy path-length regularisation on ``batch // path_batch_shrink`` images (fp32)."""
    path_batch = max(1, batch // path_batch_shrink)
    fake, latents = _synthesize(nets.G, path_batch, mixing_prob=mixing_prob, noise=noise, return_latents=True)
    probe = noise.probe(fake.shape).to(fake.device)
    probe = probe / math.sqrt(fake.shape[2] * fake.shape[3])
    penalty, new_mean, lengths = path_length_penalty(
        fake, latents, nets.mean_path_length.to(fake.device), decay=path_decay, noise=probe
    )
    # Zero-weighted image term: every G parameter takes part in the backward (DDP; docs/ray.md).
    loss = path_weight * g_reg_every * penalty + 0 * fake[0, 0, 0, 0]
    nets.g_optim.zero_grad(set_to_none=True)
    loss.backward()
    nets.g_optim.step()
    nets.mean_path_length = new_mean.detach().float()
    return {"path_penalty": penalty.item(), "path_length": lengths.mean().item(), "mean_path_length": new_mean.item()}


def _autocast(enabled: bool, device: torch.device) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def pretrain_step(
    nets: StyleGANNets,
    real: Tensor,
    *,
    p: PretrainConfig,
    step: int,
    generator: torch.Generator,
    ema_decay: float,
    autocast: bool = False,
    noise: StepNoise | None = None,
) -> dict[str, float]:
    """One stage-0 iteration (rosinality train.py): D step, lazy R1 when ``step % d_reg_every
    == 0``, G step, lazy path length when ``step % g_reg_every == 0``, EMA of G.

    ``real`` (B, 3, S, S) in [-1, 1]; ``step`` is the 0-based index of this iteration. The
    regulariser metrics (``r1``; ``path_penalty``, ``path_length``, ``mean_path_length``)
    appear only on the steps that compute them. ``noise``: where z, noise maps and the probe
    come from (default: ``StepNoise(generator, real.device)``).
    """
    amp = _autocast(autocast, real.device)
    noise = noise or StepNoise(generator, real.device)
    batch = real.shape[0]
    metrics = discriminator_step(nets, real, mixing_prob=p.mixing_prob, noise=noise, amp=amp)
    if p.r1_gamma > 0 and step % p.d_reg_every == 0:
        metrics.update(r1_step(nets, real, r1_gamma=p.r1_gamma, d_reg_every=p.d_reg_every))
    metrics.update(generator_step(nets, batch, mixing_prob=p.mixing_prob, noise=noise, amp=amp))
    if p.path_weight > 0 and step % p.g_reg_every == 0:
        metrics.update(
            path_length_step(
                nets,
                batch,
                path_weight=p.path_weight,
                g_reg_every=p.g_reg_every,
                path_batch_shrink=p.path_batch_shrink,
                path_decay=p.path_decay,
                mixing_prob=p.mixing_prob,
                noise=noise,
            )
        )
    accumulate_ema(nets.G_ema, ckpt.unwrap(nets.G), ema_decay, params=nets.trainable)
    return metrics


def finetune_step(
    nets: StyleGANNets,
    real: Tensor,
    *,
    f: FinetuneConfig,
    step: int,
    generator: torch.Generator,
    ema_decay: float,
    clip: nn.Module | None,
    lpips: nn.Module | None,
    autocast: bool = False,
    noise: StepNoise | None = None,
) -> dict[str, float]:
    """One stage-1 iteration (paper Eq. 3): D step on anime ``real``, lazy R1, then the G_t step
    ``L = L_GAN + lambda_global (D_CLIP(x^p, y^p) + lambda_lpips LPIPS(x^p, y^p)) + lambda_patch
    L_patch`` with ``x^p = G_s(w)``, ``y^p = G_t(w)`` sharing z, inject index and noise; no path
    length; EMA over G_t's trainable parameters. Only those parameters are in ``g_optim``.

    ``clip`` / ``lpips`` may be None when their weight is 0. ``noise``: where z, noise maps and
    the patch corners come from (default: ``StepNoise(generator, real.device)``).
    """
    if nets.G_s is None:
        raise AssertionError("finetune_step needs the frozen source generator nets.G_s")
    amp = _autocast(autocast, real.device)
    noise = noise or StepNoise(generator, real.device)
    batch = real.shape[0]
    metrics = discriminator_step(nets, real, mixing_prob=f.mixing_prob, noise=noise, amp=amp)
    if f.r1_gamma > 0 and step % f.d_reg_every == 0:
        metrics.update(r1_step(nets, real, r1_gamma=f.r1_gamma, d_reg_every=f.d_reg_every))

    # G step: one z list, inject index and noise list, shared by G_s and G_t.
    set_requires_grad(nets.D, False)
    D = ckpt.unwrap(nets.D)
    G_s = nets.G_s
    styles, inject = noise.styles(batch, G_s.style_dim, mixing_prob=f.mixing_prob, n_latent=G_s.n_latent)
    maps = noise.noise(G_s, batch)
    with torch.no_grad(), amp:
        x_p = G_s(styles, noise=maps, inject_index=inject)[0].float()
    with amp:  # the priors run under autocast too (bf16 on GPU when asked); losses come out fp32
        y_p = nets.G(styles, noise=maps, inject_index=inject)[0].float()
        loss_adv = g_nonsaturating_loss(D(y_p).float())
        loss_clip = loss_lpips = loss_patch = y_p.new_zeros(())
        if f.lambda_global > 0:
            with torch.no_grad():
                emb_x = clip(x_p)
            loss_clip = clip_distance(emb_x, clip(y_p))
            if f.lambda_lpips > 0:
                loss_lpips = lpips(x_p, y_p).float().mean()
        if f.lambda_patch > 0:
            corners = noise.patch_corners(x_p.shape[-1], f.patch_size, f.patch_count)
            loss_patch = clip_patch_nce(clip, x_p, y_p, corners=corners, patch_size=f.patch_size, tau=f.patch_tau)
    loss = loss_adv + f.lambda_global * (loss_clip + f.lambda_lpips * loss_lpips) + f.lambda_patch * loss_patch
    nets.g_optim.zero_grad(set_to_none=True)
    loss.backward()
    nets.g_optim.step()

    accumulate_ema(nets.G_ema, ckpt.unwrap(nets.G), ema_decay, params=nets.trainable)
    metrics.update(
        loss_G=loss.item(),
        loss_G_adv=loss_adv.item(),
        loss_clip=loss_clip.item(),
        loss_lpips=loss_lpips.item(),
        loss_patch=loss_patch.item(),
    )
    return metrics


# ----------------------------------------------------------------------------------------
# Samples, snapshots, source checkpoints


def fixed_latents(count: int, latent_dim: int, seed: int) -> Tensor:
    """The sample grids' z: the same for every rank, run and resume. (count, latent_dim)"""
    return torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def pretrain_samples(G_ema: Generator, z: Tensor) -> np.ndarray:
    """A grid of G_ema(z) with the stored noise maps (SAMPLE_GRID rows x columns)."""
    images, _ = G_ema([z.to(G_ema.input.input.device)], randomize_noise=False)
    pics = to_uint8(images.float().cpu())
    rows, cols = SAMPLE_GRID
    return image_grid([[pics[r * cols + c] for c in range(cols) if r * cols + c < len(pics)] for r in range(rows)])


@torch.no_grad()
def finetune_samples(G_s: Generator, G_t: Generator, z: Tensor) -> np.ndarray:
    """Rows of (G_s(w), G_t(w)) for fixed w = G_s's mapping of z (stored noise maps)."""
    w = G_s.get_latent(z.to(G_s.input.input.device))
    x, _ = G_s([w], input_is_latent=True, randomize_noise=False)
    y, _ = G_t([w], input_is_latent=True, randomize_noise=False)
    xs, ys = to_uint8(x.float().cpu()), to_uint8(y.float().cpu())
    return image_grid([[a, b] for a, b in zip(xs, ys)], col_labels=["G_s(w)", "G_t(w)"])


def rosinality_args(cfg: Config, stage: str, progress: dict, world_size: int) -> dict[str, Any]:
    """The ``args`` entry of an exported checkpoint: rosinality's names, plain data only."""
    s = cfg.stylegan
    section = cfg.pretrain if stage == "pretrain" else cfg.finetune
    args: dict[str, Any] = {
        "size": s.size,
        "latent": s.latent_dim,
        "n_mlp": s.n_mlp,
        "channel_multiplier": s.channel_multiplier,
        "channel_base": s.channel_base,
        "channel_max": s.channel_max,
        "batch": section.batch_size_per_worker,
        "world_size": world_size,
        "iter": progress["step"],
        "num_images_seen": progress["num_images_seen"],
        "lr": section.lr,
        "r1": section.r1_gamma,
        "d_reg_every": section.d_reg_every,
        "mixing": section.mixing_prob,
        "scenimefy_stage": stage,
    }
    if stage == "pretrain":
        args.update(path_regularize=cfg.pretrain.path_weight, g_reg_every=cfg.pretrain.g_reg_every,
                    path_batch_shrink=cfg.pretrain.path_batch_shrink)  # fmt: skip
    else:
        f = cfg.finetune
        args.update(
            g_reg_every=f.g_reg_every,
            n_trainable_blocks=f.n_trainable_blocks,
            lambda_global=f.lambda_global,
            lambda_lpips=f.lambda_lpips,
            lambda_patch=f.lambda_patch,
            source_checkpoint=f.source_checkpoint,
        )
    return args


def resolve_snapshot_path(path: str | Path) -> Path:
    """A rosinality-format file, or one of our checkpoint directories (its ``stylegan.pt``)."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / STYLEGAN_SNAPSHOT_FILE).is_file():
            raise ValueError(
                f"{str(path)!r} is a directory without {STYLEGAN_SNAPSHOT_FILE}: pass the checkpoint file itself"
            )
        return path / STYLEGAN_SNAPSHOT_FILE
    return path


def load_source_checkpoint(path: str | Path) -> dict:
    """Read a stage-1 source (rosinality ``lhq-220000.pt`` or our stage-0 ``stylegan.pt``)."""
    return load_rosinality_checkpoint(resolve_snapshot_path(path))


def source_networks(source_state: dict, s: StyleGANConfig) -> tuple[Generator, Discriminator | None]:
    """``(g_ema, d)`` of a loaded source checkpoint, checked against the configured architecture.

    A checkpoint of another size or channel table raises ValueError naming both (via
    ``build_from_rosinality``); so does another latent size or mapping depth.
    """
    _, d, g_ema, info = build_from_rosinality(
        source_state,
        expected_size=s.size,
        expected_channel_multiplier=s.channel_multiplier,
        expected_channel_base=s.channel_base,
        expected_channel_max=s.channel_max,
    )
    if (info["style_dim"], info["n_mlp"]) != (s.latent_dim, s.n_mlp):
        raise ValueError(
            f"source checkpoint has latent {info['style_dim']} / n_mlp {info['n_mlp']}, config asks for "
            f"stylegan.latent_dim={s.latent_dim} / stylegan.n_mlp={s.n_mlp}: set them to the checkpoint's"
        )
    return g_ema, d


def check_arch(saved: dict, cfg: Config, extra: dict[str, Any] | None = None) -> None:
    """On resume the architecture comes from the checkpoint; a conflicting config is an error.

    ``extra``: more keys to compare, as ``{key: (checkpoint value, config value)}``.
    """
    pairs = {f"stylegan.{name}": (saved["stylegan"].get(name), getattr(cfg.stylegan, name)) for name in ARCH_FIELDS}
    ckpt.check_same_architecture({**pairs, **(extra or {})})


# ----------------------------------------------------------------------------------------
# What the two loops share


def _images(kimg: float) -> int:
    """kimg -> images, exactly (0.012 kimg is 12 images, not 12.000000000000002)."""
    return round(kimg * 1000)


def _real_batch(stream: Stream, *, size: int, flip: bool, generator: torch.Generator, device: torch.device) -> Tensor:
    (real,) = random_crop_flip([stream.next()["image"]], crop_size=size, flip=flip, generator=generator)
    return real.to(device, non_blocking=True)


def _setup(run: RunConfig, device: torch.device) -> None:
    torch.manual_seed(run.seed)  # identical initial weights on every rank
    configure_process(device, torch_threads=run.torch_threads, keep_heap=run.cpu_keep_heap)


def _checkpoint_writer(
    ctx: WorkerContext, cfg: Config, stage: str, nets: StyleGANNets, progress: dict, stream: Stream
) -> Callable[[str], None]:
    """Every rank: consistency check and gathers; rank 0 runs the returned writer, which writes
    state.pt + stylegan.pt + config.yaml into a directory."""
    modules = {"G": ckpt.unwrap(nets.G), "D": ckpt.unwrap(nets.D), "G_ema": nets.G_ema}
    assert_ranks_identical(modules)
    rng_states = gather_per_rank(ckpt.rng_state())
    path_means = gather_per_rank(float(nets.mean_path_length))

    def write(d: str) -> None:
        models = {name: m.state_dict() for name, m in modules.items()}
        if nets.G_s is not None:
            models["G_s"] = nets.G_s.state_dict()
        ckpt.save_state(
            d,
            {
                "stage": stage,
                "models": models,
                "optimizers": {"G": nets.g_optim.state_dict(), "D": nets.d_optim.state_dict()},
                "progress": dict(progress),
                "mean_path_length": path_means,
                "streams": {stream.name: [stream.position.pass_index, stream.position.batches_in_pass]},
                "rng": rng_states,
                "seed": cfg.run.seed,
                "config": to_dict(cfg),
            },
        )
        save_rosinality_checkpoint(
            Path(d) / STYLEGAN_SNAPSHOT_FILE,
            modules["G"],
            modules["D"],
            nets.G_ema,
            nets.g_optim,
            nets.d_optim,
            rosinality_args(cfg, stage, progress, ctx.world_size),
        )
        (Path(d) / ckpt.CONFIG_FILE).write_text(dump_yaml(cfg))

    return write


def _load_resume_state(
    ctx: WorkerContext, stage: str, cfg: Config, extra: dict[str, Any] | None = None
) -> tuple[str | None, dict | None]:
    """The newest usable kept checkpoint (`ckpt.load_resume_state`) as (directory, state), checked
    against the stage and the config; (None, None) without one."""
    resumed = ckpt.load_resume_state(ctx, stage)
    if resumed is None:
        return None, None
    resume_dir, state = resumed
    if state.get("stage") != stage:
        raise ValueError(
            f"cannot resume {stage} from {resume_dir}: it is a {state.get('stage')!r} checkpoint; use another run.name"
        )
    saved_extra = {k: (_dig(state["config"], k), v) for k, v in (extra or {}).items()}
    check_arch(state["config"], cfg, saved_extra)
    return resume_dir, state


def _dig(data: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part, {}) if isinstance(data, dict) else None
    return data


# ----------------------------------------------------------------------------------------
# Stage 0: the pretraining loop


def _loop_summary(progress: dict, state: dict | None, last: dict[str, float], modules: dict[str, nn.Module]) -> dict:
    """What a StyleGAN loop returns: counters, where it resumed from, the last metrics, per-rank checksums."""
    return {
        "step": progress["step"],
        "num_images_seen": progress["num_images_seen"],
        "resumed_from_step": state["progress"]["step"] if state is not None else None,
        "metrics": last,
        "rank_checksums": rank_checksums(modules),
    }


def train_pretrain(cfg: Config, sources: dict[str, BatchSource], ctx: WorkerContext) -> dict[str, Any]:
    """Train G_s on real photos until ``pretrain.total_kimg`` thousand images have been shown.

    sources: ``{"photos": this worker's shard}`` with column "image" (B, S, S, 3) uint8 at
    S = stylegan.size. Returns a summary (step, images seen, last metrics, rank checksums).
    """
    s, p, run = cfg.stylegan, cfg.pretrain, cfg.run
    device = ctx.device
    check_batch_size(p.batch_size_per_worker, "pretrain.batch_size_per_worker")
    global_batch = p.batch_size_per_worker * ctx.world_size
    target_images = _images(p.total_kimg)
    ema_decay = ema_beta(global_batch, half_life_kimg=p.ema_half_life_kimg)

    # Initialise: seeds derive from (seed, rank, step); the global RNG only seeds init.
    _setup(run, device)
    autocast = p.precision == "bf16" and device.type == "cuda"

    # Build networks (identical on every rank), then resume or start from weights.
    G, D = build_generator(s), build_discriminator(s)
    G_ema = copy.deepcopy(G)
    progress = {"step": 0, "num_images_seen": 0}
    position = StreamPosition()
    mean_path_length = 0.0
    resume_dir, state = _load_resume_state(ctx, "pretrain", cfg)
    if state is not None:
        for name, module in (("G", G), ("D", D), ("G_ema", G_ema)):
            module.load_state_dict(state["models"][name])
        progress = dict(state["progress"])
        position = StreamPosition(*state["streams"]["photos"])
        mean_path_length = own_entry(state["mean_path_length"], ctx.rank)
        ckpt.set_rng_state(own_entry(state["rng"], ctx.rank))
    elif p.init_from:
        g, d, g_ema, _info = build_from_rosinality(
            load_source_checkpoint(p.init_from),
            expected_size=s.size,
            expected_channel_multiplier=s.channel_multiplier,
            expected_channel_base=s.channel_base,
            expected_channel_max=s.channel_max,
        )
        G.load_state_dict((g or g_ema).state_dict())
        G_ema.load_state_dict(g_ema.state_dict())
        if d is not None:
            D.load_state_dict(d.state_dict())
    G_ema.eval().requires_grad_(False)
    for m in (G, D, G_ema):
        m.to(device)
    g_optim, d_optim = build_optimizers(
        G, D, lr=p.lr, beta1=p.beta1, beta2=p.beta2, g_reg_every=p.g_reg_every, d_reg_every=p.d_reg_every
    )
    if state is not None:
        g_optim.load_state_dict(state["optimizers"]["G"])
        d_optim.load_state_dict(state["optimizers"]["D"])
    nets = StyleGANNets(
        G=ctx.wrap_ddp(G), D=ctx.wrap_ddp(D), G_ema=G_ema, g_optim=g_optim, d_optim=d_optim,
        mean_path_length=torch.tensor(float(mean_path_length)),
    )  # fmt: skip
    if ctx.is_main:
        where = (
            f"resumed at {progress['num_images_seen'] / 1000:.3f} kimg (step {progress['step']})"
            if state
            else "starting"
        )
        print(
            f"[pretrain] {where}: {p.total_kimg} kimg at {s.size} px, {ctx.world_size} worker(s) x batch "
            f"{p.batch_size_per_worker} (global {global_batch}), EMA beta {ema_decay:.6f}, device {device}",
            flush=True,
        )

    # Data: one endless stream, positioned where the checkpoint left it.
    stream = Stream(sources["photos"], "photos", position)
    z_samples = fixed_latents(SAMPLE_GRID[0] * SAMPLE_GRID[1], s.latent_dim, run.seed)
    loop = StageLoop(
        ctx,
        Cadence(
            log_every=_images(p.log_every_kimg),
            sample_every=_images(p.sample_every_kimg),
            checkpoint_every=_images(p.checkpoint_every_kimg),
        ),
        stage="pretrain",
        hint="lower pretrain.lr (or raise pretrain.r1_gamma), or train in fp32 (pretrain.precision=fp32)",
        watch={"G": G, "D": D, "G_ema": G_ema},
        resumed=(progress["step"], resume_dir) if state is not None else None,
    )

    # Train. Intervals count images; a report goes out with each checkpoint.
    last: dict[str, float] = {}
    while progress["num_images_seen"] < target_images:
        step, before = progress["step"], progress["num_images_seen"]
        gen = ckpt.step_generator(run.seed, ctx.rank, step)
        real = _real_batch(stream, size=s.size, flip=p.flip, generator=gen, device=device)
        metrics = pretrain_step(nets, real, p=p, step=step, generator=gen, ema_decay=ema_decay, autocast=autocast)
        progress["step"] = done = step + 1
        progress["num_images_seen"] = after = before + global_batch
        loop.add(metrics, global_batch, step=done)
        stop_now = after >= target_images or ctx.should_stop()
        due = loop.due(before, after, last=stop_now)

        if due.log:  # metrics averaged over the window and across ranks
            stats = loop.flush()
            last = {
                **stats.means,
                "sec_per_kimg": stats.seconds / (stats.images / 1000),
                "kimg": after / 1000,
                "step": float(done),
            }
            loop.log(
                last,
                done,
                f"[pretrain] kimg {after / 1000:.3f}/{p.total_kimg} step {done} "
                f"G {last['loss_G']:.3f} D {last['loss_D']:.3f} {last['sec_per_kimg']:.1f} s/kimg",
            )
        if ctx.is_main and due.sample:
            ctx.tracker.log_image(pretrain_samples(G_ema, z_samples), f"samples/kimg_{after / 1000:010.3f}.png")
        if due.report:
            writer = _checkpoint_writer(ctx, cfg, "pretrain", nets, progress, stream) if due.checkpoint else None
            loop.report(report_metrics(last, step=done), writer)
        if stop_now:
            break

    return _loop_summary(progress, state, last, {"G": G, "D": D, "G_ema": G_ema})


# ----------------------------------------------------------------------------------------
# Stage 1: the fine-tuning loop


def _load_priors(cfg: Config, device: torch.device) -> tuple[nn.Module | None, nn.Module | None]:
    """CLIP when D_CLIP or L_patch is on, LPIPS when its weight is on (both frozen)."""
    from scenimefy.priors.loading import load_clip, load_lpips

    f = cfg.finetune
    clip = load_clip(cfg.priors, device) if (f.lambda_global > 0 or f.lambda_patch > 0) else None
    lpips = load_lpips(cfg.priors, device) if (f.lambda_global > 0 and f.lambda_lpips > 0) else None
    return clip, lpips


def train_finetune(
    cfg: Config, sources: dict[str, BatchSource], ctx: WorkerContext, *, source_state: dict | None
) -> dict[str, Any]:
    """Fine-tune G_t from G_s on anime images for ``finetune.iterations`` iterations.

    sources: ``{"anime": this worker's shard}`` (column "image" at stylegan.size).
    source_state: the loaded source checkpoint (``load_source_checkpoint``); G_s, G_t and G_t's
    EMA all start from its ``g_ema`` and D from its ``d`` (a fresh D if it has none). Ignored
    when resuming (everything comes from the checkpoint), so it may then be None.
    """
    s, f, run = cfg.stylegan, cfg.finetune, cfg.run
    device = ctx.device
    check_batch_size(f.batch_size_per_worker, "finetune.batch_size_per_worker")
    global_batch = f.batch_size_per_worker * ctx.world_size
    ema_decay = ema_beta(global_batch, half_life_kimg=f.ema_half_life_kimg)
    if f.lambda_patch > 0:
        random_patch_corners(s.size, f.patch_size, f.patch_count, torch.Generator())  # validates the sizes

    # Initialise.
    _setup(run, device)
    autocast = f.precision == "bf16" and device.type == "cuda"

    # Build networks from the source (or the checkpoint), then freeze G_t before DDP wraps it.
    G_s, G_t, G_ema, D = build_generator(s), build_generator(s), build_generator(s), build_discriminator(s)
    progress = {"step": 0, "num_images_seen": 0}
    position = StreamPosition()
    extra = {"finetune.n_trainable_blocks": f.n_trainable_blocks}
    resume_dir, state = _load_resume_state(ctx, "finetune", cfg, extra)
    if state is not None:
        for name, module in (("G_s", G_s), ("G", G_t), ("G_ema", G_ema), ("D", D)):
            module.load_state_dict(state["models"][name])
        progress = dict(state["progress"])
        position = StreamPosition(*state["streams"]["anime"])
        ckpt.set_rng_state(own_entry(state["rng"], ctx.rank))
    else:
        if source_state is None:
            raise ValueError("fine-tuning needs a source generator: set finetune.source_checkpoint")
        g_ema, d = source_networks(source_state, s)
        for module in (G_s, G_t, G_ema):
            module.load_state_dict(g_ema.state_dict())
        if d is not None:
            D.load_state_dict(d.state_dict())
        elif ctx.is_main:
            print("[finetune] the source checkpoint has no discriminator: D starts from scratch", flush=True)
    G_s.eval().requires_grad_(False)
    G_ema.eval().requires_grad_(False)
    trainable = freeze_for_finetuning(G_t, f.n_trainable_blocks)
    for m in (G_s, G_t, G_ema, D):
        m.to(device)
    g_optim, d_optim = build_optimizers(
        G_t, D, lr=f.lr, beta1=f.beta1, beta2=f.beta2, g_reg_every=f.g_reg_every, d_reg_every=f.d_reg_every
    )
    if state is not None:
        g_optim.load_state_dict(state["optimizers"]["G"])
        d_optim.load_state_dict(state["optimizers"]["D"])
    nets = StyleGANNets(
        G=ctx.wrap_ddp(G_t), D=ctx.wrap_ddp(D), G_ema=G_ema, g_optim=g_optim, d_optim=d_optim, G_s=G_s,
        trainable=trainable,
    )  # fmt: skip
    clip, lpips = _load_priors(cfg, device)
    if ctx.is_main:
        where = f"resumed at iteration {progress['step']}" if state else "starting"
        n_train = sum(p.numel() for n, p in G_t.named_parameters() if n in set(trainable))
        print(
            f"[finetune] {where}: {f.iterations} iterations at {s.size} px, last {f.n_trainable_blocks} "
            f"block(s) of G_t trainable ({n_train:,} parameters), {ctx.world_size} worker(s) x batch "
            f"{f.batch_size_per_worker} (global {global_batch}), device {device}",
            flush=True,
        )

    # Data.
    stream = Stream(sources["anime"], "anime", position)
    z_samples = fixed_latents(SAMPLE_PAIRS, s.latent_dim, run.seed)

    loop = StageLoop(
        ctx,
        Cadence(
            log_every=f.log_every_steps, sample_every=f.sample_every_steps, checkpoint_every=f.checkpoint_every_steps
        ),
        stage="finetune",
        hint="lower finetune.lr (or the loss weights finetune.lambda_*), or train in fp32 (finetune.precision=fp32)",
        watch={"G": G_t, "D": D, "G_ema": G_ema},
        resumed=(progress["step"], resume_dir) if state is not None else None,
    )

    # Train. Intervals count iterations; a report goes out with each checkpoint.
    last: dict[str, float] = {}
    while progress["step"] < f.iterations:
        step = progress["step"]
        gen = ckpt.step_generator(run.seed, ctx.rank, step)
        real = _real_batch(stream, size=s.size, flip=f.flip, generator=gen, device=device)
        metrics = finetune_step(
            nets, real, f=f, step=step, generator=gen, ema_decay=ema_decay, clip=clip, lpips=lpips, autocast=autocast
        )
        progress["step"] = done = step + 1
        progress["num_images_seen"] += global_batch
        loop.add(metrics, global_batch, step=done)
        stop_now = done >= f.iterations or ctx.should_stop()
        due = loop.due(step, done, last=stop_now)

        if due.log:
            stats = loop.flush()
            last = {**stats.means, "it_per_s": stats.steps / stats.seconds, "step": float(done)}
            loop.log(
                last,
                done,
                f"[finetune] iteration {done}/{f.iterations} G {last['loss_G']:.3f} D {last['loss_D']:.3f} "
                f"clip {last['loss_clip']:.3f} patch {last['loss_patch']:.3f} {last['it_per_s']:.2f} it/s",
            )
        if ctx.is_main and due.sample:
            ctx.tracker.log_image(finetune_samples(G_s, G_ema, z_samples), f"samples/step_{done:07d}.png")
        if due.report:
            writer = _checkpoint_writer(ctx, cfg, "finetune", nets, progress, stream) if due.checkpoint else None
            loop.report(report_metrics(last, step=done), writer)
        if stop_now:
            break

    return _loop_summary(progress, state, last, {"G": G_t, "D": D, "G_ema": G_ema})
