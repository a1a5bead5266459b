"""Stage 3: semi-supervised translation, as a step function and a worker loop.

`translator_step` is the paper's algorithm box for one batch (update D_U, then D_P, then G
with F and F_s); its patch positions come from an injectable sampler. `train_translator` is
the loop around it: build, resume, iterate the three data streams, then the shared tail of
`scenimefy.stages.loop` (log, sample, evaluate, checkpoint, report: one report per epoch end,
whatever the checkpoint interval). Neither imports Ray or MLflow; the cluster comes in through
a `WorkerContext`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from scenimefy.config import Config, TranslatorConfig, dump_yaml, to_dict
from scenimefy.data.images import image_grid, to_uint8
from scenimefy.data.streams import BatchSource, Stream, StreamPosition
from scenimefy.data.transforms import random_crop_flip
from scenimefy.inference.translate import load_translator, save_translator_snapshot
from scenimefy.losses import hard_negative_weights, hdce_loss_layers, lsgan_loss, src_loss_layers, style_patch_nce
from scenimefy.models.translator import PatchGANDiscriminator, PatchProjection, ResnetGenerator, load_generator_state
from scenimefy.models.utils import set_requires_grad
from scenimefy.stages import checkpoint as ckpt
from scenimefy.stages.context import (
    WorkerContext,
    assert_ranks_identical,
    broadcast_from_main,
    gather_per_rank,
    own_entry,
    rank_checksums,
)
from scenimefy.stages.host import configure_process
from scenimefy.stages.loop import Cadence, StageLoop, report_metrics
from scenimefy.stages.schedules import hdce_gamma_schedule, lambda_sup_schedule, lr_factor

ARCH_FIELDS = ("ngf", "n_blocks", "ndf", "n_layers_d", "nce_layers", "head_dim")
NETWORKS = ("G", "F", "F_s", "D_U", "D_P")
NONFINITE_HINT = (
    "lower translator.lr (or the loss weights translator.lambda_*), or train in fp32 (translator.precision=fp32)"
)


# ----------------------------------------------------------------------------------------
# Networks and optimisers


@dataclass
class TranslatorNets:
    """The five networks of stage 3 (possibly DDP-wrapped) and their optimisers/schedulers."""

    G: nn.Module
    F: nn.Module  # projection head of the unsupervised losses (SRC, hDCE)
    F_s: nn.Module  # projection head of StylePatchNCE
    D_U: nn.Module  # unconditional PatchGAN on anime images
    D_P: nn.Module  # conditional PatchGAN on (x^p, image)
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler]
    # What the G step calls without updating: the discriminators (frozen) and G's encoder for
    # y^p (no grad). Bare modules, not DDP-wrapped (no gradient of theirs is reduced);
    # defaults to the unwrapped networks, `assemble_nets` compiles them with the rest.
    frozen: dict[str, nn.Module] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("G", "D_U", "D_P"):
            self.frozen.setdefault(name, ckpt.unwrap(getattr(self, name)))

    def modules(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in NETWORKS}


def build_networks(t: TranslatorConfig) -> dict[str, nn.Module]:
    G = ResnetGenerator(ngf=t.ngf, n_blocks=t.n_blocks)
    channels = G.feature_channels(t.nce_layers)
    return {
        "G": G,
        "F": PatchProjection(channels, t.head_dim),
        "F_s": PatchProjection(channels, t.head_dim),
        "D_U": PatchGANDiscriminator(3, t.ndf, t.n_layers_d),
        "D_P": PatchGANDiscriminator(6, t.ndf, t.n_layers_d),
    }


def build_optimizers(
    modules: dict[str, nn.Module], t: TranslatorConfig
) -> tuple[dict[str, torch.optim.Optimizer], dict[str, torch.optim.lr_scheduler.LRScheduler]]:
    """Adam (lr, betas) per network; lr constant for n_epochs, then linear decay (CUT policy).

    On a GPU, Adam's fused kernel (one launch per network instead of a few per tensor; the
    same update). Build after moving the networks to their device.
    """
    optimizers, schedulers = {}, {}
    for name, module in modules.items():
        params = list(module.parameters())
        fused = bool(params) and all(p.is_cuda for p in params)
        opt = torch.optim.Adam(params, lr=t.lr, betas=(t.beta1, t.beta2), fused=fused or None)
        optimizers[name] = opt
        # LambdaLR's counter is 0-based; lr_factor takes the 1-based epoch.
        schedulers[name] = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: lr_factor(e + 1, n_epochs=t.n_epochs, n_epochs_decay=t.n_epochs_decay)
        )
    return optimizers, schedulers


def assemble_nets(
    bare: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler],
    *,
    wrap_ddp: Callable[[nn.Module], nn.Module] = lambda m: m,
    compile: bool = False,
    compile_mode: str = "default",
) -> TranslatorNets:
    """The networks as a step uses them: DDP-wrapped for their updates and, with `compile`,
    G, D_U, D_P and their frozen uses compiled (they hold nearly all of a step's FLOPs).

    Compiled wrappers share the parameters of `bare`. Shapes are static: a step calls G at
    two batch sizes, and inductor (torch 2.14) fails on some dynamic-shape graphs of this
    network; each shape compiles once instead. `compile_mode` is torch.compile's `mode`
    ("reduce-overhead" replays CUDA graphs: for small batches, where launches dominate).
    """
    wrapped = {name: wrap_ddp(m) for name, m in bare.items()}
    frozen = {name: bare[name] for name in ("G", "D_U", "D_P")}
    if compile:
        options = {"dynamic": False, "mode": None if compile_mode == "default" else compile_mode}
        wrapped.update({name: torch.compile(wrapped[name], **options) for name in frozen})
        frozen = {name: torch.compile(m, **options) for name, m in frozen.items()}
    return TranslatorNets(**wrapped, optimizers=optimizers, schedulers=schedulers, frozen=frozen)


# ----------------------------------------------------------------------------------------
# One optimisation step

# Patch positions for one PatchProjection call: the tap features (B, C, H, W) -> one (P,) int64
# tensor of flat positions per tap, shared by the whole batch.
PatchSampler = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]


def random_patch_sampler(num_patches: int, generator: torch.Generator) -> PatchSampler:
    """The default: per tap, the first min(num_patches, H*W) of a CPU ``randperm(H*W)`` drawn
    from `generator`, the draw `PatchProjection` makes itself (CUT's PatchSampleF)."""

    def sample(feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        ids = []
        for feat in feats:
            h, w = feat.shape[-2:]
            ids.append(torch.randperm(h * w, generator=generator)[: min(num_patches, h * w)])
        return ids

    return sample


def translator_step(
    nets: TranslatorNets,
    x: torch.Tensor,
    y: torch.Tensor,
    xp: torch.Tensor,
    yp: torch.Tensor,
    *,
    t: TranslatorConfig,
    epoch: int,
    total_epochs: int,
    generator: torch.Generator,
    autocast: bool = False,
    patch_sampler: PatchSampler | None = None,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """D_U step, D_P step, then G + F + F_s step (paper Eq. 8; docs/method.md).

    x (B,3,S,S) photos, y anime frames, (xp, yp) a pseudo pair, all in [-1, 1].
    `patch_sampler` gives the patch positions of the contrastive losses: called once for the
    unsupervised branch (SRC, hDCE), then once for StylePatchNCE; by default
    `random_patch_sampler(t.num_patches, generator)`, the step's only use of `generator`.
    Returns detached scalar metrics and the translated images (for sample grids).
    """
    sample_patches = patch_sampler or random_patch_sampler(t.num_patches, generator)
    b, layers = x.shape[0], list(t.nce_layers)
    device_type = x.device.type
    amp = torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast)
    lambda_sup = lambda_sup_schedule(epoch, total_epochs) if t.lambda_sup_decay else 1.0
    gamma = (
        hdce_gamma_schedule(epoch, total_epochs, gamma_start=t.gamma_start, gamma_end=t.gamma_end)
        if t.gamma_curriculum
        else t.gamma_start
    )

    # Forward: G([x; y; x^p]) once; the encoder features of x and y come from this same pass.
    real = torch.cat([x, y, xp]) if t.hdce_identity else torch.cat([x, xp])
    with amp:
        fake, real_feats = nets.G(real, layers=layers)
    fake_x, fake_xp = fake[:b], fake[-b:]
    fake_y = fake[b : 2 * b] if t.hdce_identity else None

    # D_U: real anime y vs G(x).
    set_requires_grad(nets.D_U, True)
    set_requires_grad(nets.D_P, True)
    # Each discriminator sees its fake and real images in one batched call (instance norm is
    # per image, so this equals two calls; on CPU a batch of 2 is much cheaper than 2 of 1).
    with amp:
        pred_fake, pred_real = nets.D_U(torch.cat([fake_x.detach(), y])).float().chunk(2)
        loss_d_u = 0.5 * (lsgan_loss(pred_fake, False) + lsgan_loss(pred_real, True))
    nets.optimizers["D_U"].zero_grad(set_to_none=True)
    loss_d_u.backward()
    nets.optimizers["D_U"].step()

    # D_P: real pair (x^p, y^p) vs (x^p, G(x^p)); lambda_sup does not scale this update.
    with amp:
        pairs = torch.cat([torch.cat([xp, fake_xp.detach()], 1), torch.cat([xp, yp], 1)])
        pred_fake, pred_real = nets.D_P(pairs).float().chunk(2)
        loss_d_p = 0.5 * (lsgan_loss(pred_fake, False) + lsgan_loss(pred_real, True))
    nets.optimizers["D_P"].zero_grad(set_to_none=True)
    loss_d_p.backward()
    nets.optimizers["D_P"].step()

    # G step: the discriminators are frozen and called unwrapped (no DDP reduction for them).
    set_requires_grad(nets.D_U, False)
    set_requires_grad(nets.D_P, False)
    D_U, D_P = nets.frozen["D_U"], nets.frozen["D_P"]
    with amp:
        loss_gan = lsgan_loss(D_U(fake_x).float(), True)
        loss_gan_p = lsgan_loss(D_P(torch.cat([xp, fake_xp], 1)).float(), True)

        # Encode every translation once, in one batch: [G(x); G(y); G(x^p)].
        fakes_u = torch.cat([fake_x, fake_y]) if t.hdce_identity else fake_x
        n_u = fakes_u.shape[0]
        fake_feats = nets.G(torch.cat([fakes_u, fake_xp]), layers=layers, encode_only=True)

        # Unsupervised branch: queries from G(x) (and G(y)), keys from x (and y), same positions.
        queries = [f[:n_u].float() for f in fake_feats]
        ids = sample_patches(queries)
        q_all, ids = nets.F(queries, t.num_patches, patch_ids=ids)
        with torch.no_grad():
            k_all, _ = nets.F([f[:n_u].detach().float() for f in real_feats], t.num_patches, patch_ids=ids)
        q_x, k_x = [q[:b] for q in q_all], [k[:b] for k in k_all]
        loss_src = src_loss_layers(q_x, k_x)
        weights_x = [hard_negative_weights(k, gamma=gamma) for k in k_x]
        loss_hdce, hdce_ce = hdce_loss_layers(q_x, k_x, weights_x, tau=t.nce_tau)
        if t.hdce_identity:
            q_y, k_y = [q[b:] for q in q_all], [k[b:] for k in k_all]
            weights_y = [hard_negative_weights(k, gamma=gamma) for k in k_y]
            loss_hdce_y, hdce_ce_y = hdce_loss_layers(q_y, k_y, weights_y, tau=t.nce_tau)
            loss_hdce, hdce_ce = 0.5 * (loss_hdce + loss_hdce_y), 0.5 * (hdce_ce + hdce_ce_y)

        # Supervised branch: StylePatchNCE between G(x^p) and y^p, both through G's encoder.
        with torch.no_grad():
            yp_feats = nets.frozen["G"](yp, layers=layers, encode_only=True)
            keys_s = [f.float() for f in yp_feats]
            k_s, ids_s = nets.F_s(keys_s, t.num_patches, patch_ids=sample_patches(keys_s))
        q_s, _ = nets.F_s([f[n_u:].float() for f in fake_feats], t.num_patches, patch_ids=ids_s)
        loss_style = style_patch_nce(q_s, k_s, tau=t.nce_tau)

        loss_unsup = t.lambda_gan * loss_gan + t.lambda_src * loss_src + t.lambda_hdce * loss_hdce
        loss_sup = t.lambda_gan_p * loss_gan_p + t.lambda_style * loss_style
        loss_g = loss_unsup + lambda_sup * loss_sup
    for name in ("G", "F", "F_s"):
        nets.optimizers[name].zero_grad(set_to_none=True)
    loss_g.backward()
    for name in ("G", "F", "F_s"):
        nets.optimizers[name].step()

    # One device-to-host copy for all the losses (each .item() would wait for the GPU again).
    losses = {
        "loss_D_U": loss_d_u,
        "loss_D_P": loss_d_p,
        "loss_G": loss_g,
        "loss_G_gan": loss_gan,
        "loss_G_gan_p": loss_gan_p,
        "loss_src": loss_src,
        "loss_hdce": loss_hdce,
        "loss_hdce_ce": hdce_ce,
        "loss_style_nce": loss_style,
    }
    values = torch.stack([v.detach().float().reshape(()) for v in losses.values()]).tolist()
    metrics = {**dict(zip(losses, values)), "lambda_sup": lambda_sup, "gamma": gamma}
    return metrics, {"fake_x": fake_x.detach(), "fake_xp": fake_xp.detach()}


# ----------------------------------------------------------------------------------------
# The worker loop


def sample_grid(
    x: torch.Tensor, fake_x: torch.Tensor, xp: torch.Tensor, fake_xp: torch.Tensor, yp: torch.Tensor
) -> np.ndarray:
    """Rows of (x, G(x), x^p, G(x^p), y^p) for up to four images of the batch."""
    n = min(4, x.shape[0])
    cols = [to_uint8(t[:n].float().cpu()) for t in (x, fake_x, xp, fake_xp, yp)]
    rows = [[c[i] for c in cols] for i in range(n)]
    return image_grid(rows, col_labels=["x", "G(x)", "x^p", "G(x^p)", "y^p"])


def check_arch(saved: dict, current: TranslatorConfig) -> None:
    """On resume the architecture comes from the checkpoint; a conflicting config is an error."""
    ckpt.check_same_architecture(
        {f"translator.{name}": (saved.get(name), getattr(current, name)) for name in ARCH_FIELDS}
    )


def _batch_to_tensors(
    batch: dict[str, np.ndarray], keys: list[str], *, crop: int, flip: bool, gen, device
) -> list[torch.Tensor]:
    tensors = random_crop_flip([batch[k] for k in keys], crop_size=crop, flip=flip, generator=gen)
    if device.type == "cuda":  # pinned, so the copies overlap the GPU's work instead of waiting for it
        tensors = [t.pin_memory() for t in tensors]
    return [t.to(device, non_blocking=True) for t in tensors]


def train_translator(
    cfg: Config,
    sources: dict[str, BatchSource],
    steps_per_epoch: int,
    ctx: WorkerContext,
) -> dict[str, Any]:
    """Train G for T = n_epochs + n_epochs_decay epochs of `steps_per_epoch` steps.

    sources: "photos" (column "image"), "anime" ("image") and "pairs" ("image_a", "image_b"),
    each this worker's shard. Returns a summary (final step, last metrics).
    """
    t, run = cfg.translator, cfg.run
    device = ctx.device
    total_epochs = t.n_epochs + t.n_epochs_decay
    if steps_per_epoch < 1:
        raise ValueError("steps_per_epoch must be >= 1 (too few images for the global batch size?)")

    # Initialise: seeds derive from (seed, rank, step); the global RNG only seeds init.
    torch.manual_seed(run.seed)
    configure_process(device, torch_threads=run.torch_threads, keep_heap=run.cpu_keep_heap)
    autocast = t.precision == "bf16"  # on the CPU too: it pays where the CPU has bf16 instructions
    memory_format = torch.channels_last if t.channels_last else torch.contiguous_format

    # Build networks; identical initial weights on every rank (same seed).
    bare = build_networks(t)
    progress = {"step": 0, "epoch": 1, "num_images_seen": 0}
    positions = {name: StreamPosition() for name in sources}
    resumed = ckpt.load_resume_state(ctx, "translator")
    resume_dir, state = resumed if resumed is not None else (None, None)
    if state is not None:
        check_arch(state["config"]["translator"], t)
        for name in NETWORKS:
            load_generator_state(bare[name], state["models"][name]) if name == "G" else bare[name].load_state_dict(
                state["models"][name]
            )
        progress = dict(state["progress"])
        positions = {name: StreamPosition(*state["streams"][name]) for name in sources}
        ckpt.set_rng_state(own_entry(state["rng"], ctx.rank))
    elif t.init_from:
        init = load_translator(t.init_from, "cpu")
        load_generator_state(bare["G"], init.state_dict())
    for m in bare.values():
        m.to(device, memory_format=memory_format)
    optimizers, schedulers = build_optimizers(bare, t)
    if state is not None:
        for name in NETWORKS:
            optimizers[name].load_state_dict(state["optimizers"][name])
            schedulers[name].load_state_dict(state["schedulers"][name])
    nets = assemble_nets(
        bare, optimizers, schedulers, wrap_ddp=ctx.wrap_ddp, compile=t.compile, compile_mode=t.compile_mode
    )
    if ctx.is_main:
        where = f"resumed from step {progress['step']} (epoch {progress['epoch']})" if state else "starting"
        print(
            f"[translator] {where}: {total_epochs} epochs x {steps_per_epoch} steps, "
            f"{ctx.world_size} worker(s) x batch {t.batch_size_per_worker}, device {device}",
            flush=True,
        )

    # Data: three endless streams, positioned where the checkpoint left them.
    streams = {name: Stream(src, name, positions[name]) for name, src in sources.items()}
    crop = cfg.data.crop_size

    def checkpoint_writer() -> Callable[[str], None]:
        """Every rank: the consistency check and the RNG gather; rank 0 runs the returned writer."""
        assert_ranks_identical(bare)
        rng_states = gather_per_rank(ckpt.rng_state())

        def write(d: str) -> None:
            ckpt.save_state(
                d,
                {
                    "models": {name: ckpt.unwrap(m).state_dict() for name, m in bare.items()},
                    "optimizers": {name: o.state_dict() for name, o in optimizers.items()},
                    "schedulers": {name: s.state_dict() for name, s in schedulers.items()},
                    "progress": dict(progress),
                    "streams": {
                        name: [s.position.pass_index, s.position.batches_in_pass] for name, s in streams.items()
                    },
                    "rng": rng_states,
                    "evaluation": dict(evaluation),
                    "seed": run.seed,
                    "config": to_dict(cfg),
                },
            )
            save_translator_snapshot(Path(d) / ckpt.TRANSLATOR_SNAPSHOT_FILE, bare["G"], to_dict(cfg))
            (Path(d) / ckpt.CONFIG_FILE).write_text(dump_yaml(cfg))

        return write

    # Train. Checkpoints every checkpoint_every_steps and at each epoch end; a report at each
    # epoch end (with the evaluation scores when evaluating) and with each checkpoint.
    loop = StageLoop(
        ctx,
        Cadence(
            log_every=t.log_every_steps,
            sample_every=t.sample_every_steps,
            checkpoint_every=t.checkpoint_every_steps,
            checkpoint_at_epoch_ends=True,
            report_at_epoch_ends=True,
            evaluate_every_epochs=max(1, cfg.evaluate.every_epochs) if ctx.evaluate is not None else 0,
            last_epoch=total_epochs,
        ),
        stage="translator",
        hint=NONFINITE_HINT,
        watch=bare,
        resumed=(progress["step"], resume_dir) if state is not None else None,
    )
    last: dict[str, float] = {}
    evaluation: dict[str, float] = dict(state.get("evaluation", {})) if state is not None else {}
    stopped = False
    while progress["epoch"] <= total_epochs and not stopped:
        epoch = progress["epoch"]
        while progress["step"] < epoch * steps_per_epoch:
            step = progress["step"]
            gen = ckpt.step_generator(run.seed, ctx.rank, step)
            photos, anime, pairs = streams["photos"].next(), streams["anime"].next(), streams["pairs"].next()
            (x,) = _batch_to_tensors(photos, ["image"], crop=crop, flip=cfg.data.flip, gen=gen, device=device)
            (y,) = _batch_to_tensors(anime, ["image"], crop=crop, flip=cfg.data.flip, gen=gen, device=device)
            xp, yp = _batch_to_tensors(
                pairs, ["image_a", "image_b"], crop=crop, flip=cfg.data.pair_flip, gen=gen, device=device
            )
            if t.channels_last:
                x, y, xp, yp = (v.contiguous(memory_format=torch.channels_last) for v in (x, y, xp, yp))
            metrics, images = translator_step(
                nets, x, y, xp, yp, t=t, epoch=epoch, total_epochs=total_epochs, generator=gen, autocast=autocast
            )
            progress["step"] = done = step + 1
            progress["num_images_seen"] += x.shape[0] * ctx.world_size
            loop.add(metrics, x.shape[0] * ctx.world_size, step=done, epoch=epoch)
            end_of_epoch = done == epoch * steps_per_epoch
            stopped = bool(t.max_steps and done >= t.max_steps) or ctx.should_stop()
            due = loop.due(
                step,
                done,
                epoch=epoch if end_of_epoch else None,
                last=stopped or (end_of_epoch and epoch == total_epochs),
            )

            if due.log:  # metrics averaged over the window and across ranks
                stats = loop.flush()
                last = {
                    **stats.means,
                    "img_per_s": stats.images / stats.seconds,
                    "lr": optimizers["G"].param_groups[0]["lr"],
                    "epoch": float(epoch),
                    "step": float(done),
                }
                loop.log(
                    last,
                    done,
                    f"[translator] epoch {epoch}/{total_epochs} step {done} "
                    f"({done - (epoch - 1) * steps_per_epoch}/{steps_per_epoch}) "
                    f"G {last['loss_G']:.3f} D_U {last['loss_D_U']:.3f} D_P {last['loss_D_P']:.3f} "
                    f"lambda_sup {last['lambda_sup']:.3f} {last['img_per_s']:.2f} img/s",
                )
            if ctx.is_main and due.sample:
                ctx.tracker.log_image(
                    sample_grid(x, images["fake_x"], xp, images["fake_xp"], yp), f"samples/step_{done:07d}.png"
                )
            if due.evaluate:
                # rank 0 scores the generator; every rank reports the same values (Tune/ASHA read them)
                scores = ctx.evaluate(bare["G"], epoch) if ctx.is_main else {}
                evaluation = broadcast_from_main(scores)
                ctx.tracker.log_metrics(evaluation, step=done)
            if end_of_epoch:
                for s in schedulers.values():
                    s.step()
                progress["epoch"] = epoch + 1
            if due.report:
                loop.report(
                    report_metrics(last, step=done, epoch=due.epoch, scores=evaluation),
                    checkpoint_writer() if due.checkpoint else None,
                )
            if stopped:
                break

    return {
        "step": progress["step"],
        "epoch": progress["epoch"],
        "resumed_from_step": state["progress"]["step"] if state is not None else None,
        "metrics": {**last, **evaluation},
        "rank_checksums": rank_checksums(bare),
    }
