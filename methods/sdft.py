"""Stepwise deep feature transfer (SDFT): Earth (ImageNet) -> medium Mars set -> small target Mars set.

Step 0: the ImageNet-pretrained EfficientNet-Lite backbone.
Step 1: fine-tune the whole backbone with a *linear* classifier on the task's base pool (the medium Mars
        set), with orbital augmentation, a scene-disjoint held-out slice for early stopping and a cosine
        learning-rate schedule. The checkpoint is cached, keyed by everything that determines it.
Step 2: per episode, a *cosine-distance* classifier replaces the head; its weights are initialised from the
        support class means ("pretraining"), then head and the top of the backbone are fine-tuned on the
        support set at a low learning rate ("fine-tuning"), and the queries are predicted in eval mode.

Step 2 trains only the top stage(s) of the backbone, so the activations entering the top are computed once
per image and cached: an episode costs milliseconds of top-block compute instead of a full network pass.
During step 2 the batch-norm layers keep their step-1 statistics (eval mode): 5 to 100 support images are
too few to re-estimate them, and prediction must not depend on batch composition.
"""

from __future__ import annotations

import copy
import functools
import os
import platform
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from common.errors import UserError
from methods.augment import apply_augmentation, draw_augmentation
from methods.backbones import (
    backbone_name,
    check_splittable,
    create_backbone,
    split_top,
    top_from_state,
    weights_digest,
)
from methods.base import Context, FewShotMethod
from methods.cache import cache_key
from methods.cosine import CosineClassifier
from methods.devices import CPU, cpu_state, device_key, to_numpy
from methods.features import NUMERICS_VERSION, run_model
from methods.nearest_mean import class_means
from methods.optim import Adam
from methods.parallel import Replicas, Workers, available_cores, micro_batches, parallel_backward, training_workers
from methods.progress import SILENT, Progress
from methods.registry import register_method
from tasks.splits import scene_split

# Keys step-1 checkpoints: bump when step 1 makes another network from the same inputs (its linear head is
# drawn from the run's seed, so a checkpoint depends on nothing but its key). 3: data-parallel micro-batches.
STEP1_VERSION = 3
# Keys the cached activations entering the top: 2: only the rows outside the base pool, which are the only
# rows an episode can name.
STEP2_VERSION = 2
# Step 2's support passes are split into micro-batches of at most this many rows (an even count of them: two
# cores get equal shares) whose gradients are added in order (methods/parallel.py): the same bits on any
# number of cores. The top runs in eval mode, so the split changes only the order of the additions.
STEP2_MICRO_BATCH = 16

# Defaults, chosen so that step 1 fits in minutes and a 600-episode 5-shot run in a few more on 2 cores:
STEP1_DEFAULTS = dict(
    epochs=6,  # the held-out accuracy on HiRISE base regions stops improving after a few epochs
    batch_size=32,
    lr=3e-4,  # AdamW; a whole pretrained network moves gently
    weight_decay=1e-4,
    patience=2,  # early stopping on held-out accuracy
    val_folds=8,  # 1 of 8 scene-disjoint folds of the base pool is held out (~12%)
    # Images per micro-batch (methods/parallel.py): each batch is split into ceil(batch_size / micro_batch)
    # micro-batches of as equal sizes as possible, computed side by side on the cores (one intra-op thread
    # each) and their gradients added in order, so a checkpoint is the same bits on any number of cores. Batch
    # norm normalises each micro-batch with its own statistics, so it is part of the checkpoint's key.
    # micro_batch >= batch_size: one pass per batch, batch norm over the whole batch, on one core.
    micro_batch=16,
)
STEP2_DEFAULTS = dict(
    # The "top" fine-tuned in step 2: the final 1x1 convolution (conv_head) and its batch norm, plus the last
    # `top_blocks` MBConv stages. 0: an episode costs a third of top_blocks=1's time for accuracy within
    # noise of it (docs/methods-reference.md, "SDFT: defaults and why", has the figures), and activations
    # entering conv_head can be cached once per image.
    top_blocks=0,
    steps=20,  # full-batch Adam steps on the support set; fewer or more were within noise (docs/methods-reference.md)
    lr_top=1e-4,  # "low learning rate" for the backbone's top
    lr_head=1e-3,
    scale=10.0,  # initial cosine scale, learnable
)
# Step-2 options beyond the paper's, chosen per task on validation episodes (docs/tuning.md); at their defaults
# step 2 is the paper's.
STEP2_LATER = dict(
    # WiSE-FT-style weight-space mix of step 1 and step 0 before step 2: mix * step-1 weights + (1 - mix) *
    # ImageNet weights (batch-norm statistics too). 1: step 1's network, 0: ImageNet's.
    mix=1.0,
    # Where every episode class is a base class: the step-1 linear head's log-probabilities of the episode's
    # classes, times `fuse`, are added to the cosine head's at prediction. Elsewhere (class-disjoint tasks,
    # bench map and fixed-K, which give no class ids) it is refused unless 0.
    fuse=0.0,
    label_smoothing=0.0,  # of step 2's cross-entropy on the support
    # 8: every image is also seen in its 7 other dihedral views (90-degree rotations, mirrored): the support
    # trains step 2 on all 8 views of each image, and a query's scores are the mean over its own 8 views
    # (each query alone: nothing is learnt from the query set). 1: the image as it is.
    views=1,
)


def step1_split(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) positions of the base pool, scene-disjoint when the pool has enough scenes."""
    n_groups = len(np.unique(groups))
    if n_groups < 4:
        return np.arange(len(labels)), np.arange(0)
    n_folds = min(folds, n_groups)
    # the folds are stratified by class (scene_split): at least one class must have an image in every fold
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    if counts.max() < n_folds:
        fewer = f"use sdft:val_folds={counts.max()} or fewer, or " if counts.max() >= 2 else ""
        raise UserError(
            f"sdft step 1 holds out 1 of val_folds={folds} scene-disjoint folds of the base pool (its "
            f"{n_groups} scenes) to stop early, which needs a class with at least {n_folds} base-pool "
            f"images; the largest has {counts.max()} ({len(labels)} images in {int((counts > 0).sum())} "
            f"classes): {fewer}give a larger base pool"
        )
    train, val = scene_split(labels, groups, seed=seed, n_folds=n_folds, target_folds=1)
    return train, val


# Pace of step 1 where nothing was recorded yet: about 45 s per epoch over hirise-regions' 2,289 base images at
# 128 px with efficientnet_lite0 on 2 idle cores, two micro-batches side by side at the one-thread rate of
# `bench perf`'s step-1 row (docs/performance.md; on the shared machine, at load 3-5, an epoch took 2-4 min).
# Only for a first, rough forecast; every run records its own time in the cache, and the next run's forecast
# uses that.
REFERENCE_SECONDS_PER_IMAGE_EPOCH = 45.0 / 2289
REFERENCE_IMAGE_SIZE = 128


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def machine_load() -> float | None:
    """The 1-minute load average (runnable threads, ours included), or None where the system has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def load_note(record: dict | None) -> str:
    """How busy the machine is now (and was when `record`'s step 1 ran): a forecast holds for an idle machine."""
    now = machine_load()
    if now is None:
        return ""
    then = record.get("load") if record else None
    was = f"; {then:.1f} when that step 1 started" if isinstance(then, (int, float)) else ""
    busy = " (other work slows step 1 down)" if now > 0.5 else ""
    return f"; load average {now:.1f} on {available_cores()} cores now{was}{busy}"


def step1_forecast(record: dict | None, n_images: int, opts: dict, image_size: int) -> str:
    """The first line's forecast: from the last step 1 recorded on this machine, else a rough estimate; with
    the machine's load now (and then)."""
    work = n_images * opts["epochs"]
    if record and record.get("image_epochs", 0) > 0 and record.get("seconds", 0) > 0:
        rate = record["seconds"] / record["image_epochs"]
        workers = f", {record['workers']} workers" if "workers" in record else ""
        return (
            f"the last step 1 on this machine took {_duration(record['seconds'])} ({record['images']} images, "
            f"{record['epochs']} epochs{workers}), so expect up to {_duration(rate * work)} for {n_images} "
            f"images, {opts['epochs']} epochs{load_note(record)}"
        )
    rough = REFERENCE_SECONDS_PER_IMAGE_EPOCH * work * (image_size / REFERENCE_IMAGE_SIZE) ** 2
    return (
        f"no step 1 recorded on this machine yet; {n_images} images x up to {opts['epochs']} epochs take roughly "
        f"{_duration(rough)} on an idle 2-core CPU{load_note(None)}"
    )


def step1_timing_key(backbone: str, image_size: int, device: torch.device = CPU) -> str:
    """Where step 1's duration on this machine is noted (per backbone, image size and device, which set its pace)."""
    return cache_key("sdft-step1-time", platform.node(), backbone, image_size, *device_key(device))


def step1_optimiser(model: nn.Module, opts: dict, n_train: int):
    """(AdamW, its per-batch cosine schedule over every epoch) for step 1 on `n_train` images."""
    opt = torch.optim.AdamW(model.parameters(), lr=opts["lr"], weight_decay=opts["weight_decay"])
    steps_per_epoch = max(1, int(np.ceil(n_train / opts["batch_size"])))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=opts["epochs"] * steps_per_epoch)
    return opt, schedule


def step1_batch(
    replicas: Replicas,
    workers: Workers,
    images: np.ndarray,
    y: torch.Tensor,
    batch: np.ndarray,
    opts: dict,
    gen: torch.Generator,
    device: torch.device,
) -> float:
    """Set the gradients of the batch's mean cross-entropy (micro-batches side by side, methods/parallel.py);
    returns that mean. The augmentation is drawn for the whole batch first, in the order of one pass."""
    draws = draw_augmentation(len(batch), gen)
    parts = micro_batches(len(batch), opts["micro_batch"])

    def part_loss(i: int) -> torch.Tensor:
        rows = batch[parts[i]]
        x = apply_augmentation(torch.from_numpy(images[rows]).to(device).float() / 255.0, draws[parts[i]])
        target = y[torch.from_numpy(rows).to(device)]
        return F.cross_entropy(replicas[i]((x - 0.5) / 0.5), target, reduction="sum") / len(batch)

    replicas.start(len(parts))
    loss = parallel_backward(workers, list(replicas.model.parameters()), len(parts), part_loss)
    replicas.finish(len(parts))
    return loss


def step1_epoch(
    replicas: Replicas,
    workers: Workers,
    images: np.ndarray,
    y: torch.Tensor,
    train: np.ndarray,
    opt,
    schedule,
    gen: torch.Generator,
    opts: dict,
    epoch: int,
    progress: Progress,
    device: torch.device,
) -> float:
    """One epoch of step 1 over the `train` positions in an order drawn from `gen`; its mean training loss."""
    replicas.model.train()
    order = train[torch.randperm(len(train), generator=gen).numpy()]
    total, count = 0.0, 0
    starts = range(0, len(order), opts["batch_size"])
    with progress.bar(
        f"sdft step 1: epoch {epoch}/{opts['epochs']}, batches of {opts['batch_size']}", len(starts)
    ) as advance:
        for start in starts:
            batch = order[start : start + opts["batch_size"]]
            if len(batch) >= 2:  # batch norm needs two samples
                total += step1_batch(replicas, workers, images, y, batch, opts, gen, device) * len(batch)
                opt.step()
                schedule.step()
                count += len(batch)
            advance(1)
    return total / max(count, 1)


def held_out_accuracy(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    val: np.ndarray,
    epoch: int,
    progress: Progress,
    device: torch.device,
) -> float:
    """Step 1's accuracy on the held-out positions `val` after `epoch`; NaN where nothing is held out."""
    if not len(val):
        return float("nan")
    logits = run_model(
        model,
        images[val],
        progress=progress,
        description=f"sdft step 1: epoch {epoch} held-out images",
        device=device,
    )
    return float((logits.argmax(1) == labels[val]).mean())


def train_step1(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    opts: dict,
    seed: int,
    log,
    progress: Progress = SILENT,
    device: torch.device = CPU,
) -> tuple[dict, list]:
    """Fine-tune the whole backbone + linear head on `device`; returns (best state dict, on the CPU;
    per-epoch history). Each batch is split into micro-batches computed side by side (methods/parallel.py:
    the same bits on any number of cores); each is sent to the device as uint8 and augmented there (the
    augmentation's random draws stay on the CPU generator, so they are the same on any device). Each epoch
    shows a bar of its batches (with an ETA) on `progress`."""
    gen = torch.Generator().manual_seed(seed)
    train, val = step1_split(labels, groups, opts["val_folds"], seed)
    model.to(device)
    y = torch.from_numpy(labels).to(device)
    opt, schedule = step1_optimiser(model, opts, len(train))
    best_acc, best_state, history, stale = -1.0, None, [], 0
    with Workers(device=device) as workers:
        replicas = Replicas(model)
        for epoch in range(1, opts["epochs"] + 1):
            started = time.perf_counter()
            loss = step1_epoch(replicas, workers, images, y, train, opt, schedule, gen, opts, epoch, progress, device)
            acc = held_out_accuracy(model, images, labels, val, epoch, progress, device)
            history.append(
                {"epoch": epoch, "loss": loss, "val_accuracy": acc, "seconds": time.perf_counter() - started}
            )
            log(
                f"sdft step 1: epoch {epoch}/{opts['epochs']} loss {loss:.3f} "
                f"held-out accuracy {acc:.3f} ({time.perf_counter() - started:.0f} s, {workers.n} workers)"
            )
            if not len(val) or acc > best_acc:
                best_acc, best_state, stale = acc, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                if stale >= opts["patience"] and epoch < opts["epochs"]:
                    log(f"sdft step 1: early stop after epoch {epoch}, best held-out accuracy {best_acc:.3f}")
                    break
    return cpu_state(best_state), history


def rows_outside(n_rows: int, base: np.ndarray) -> np.ndarray:
    """Handles 0..n_rows-1 that are not in the base pool, ascending: the rows an episode (or a map) can name."""
    return np.setdiff1d(np.arange(n_rows, dtype=np.int64), np.asarray(base, np.int64))


class RowsOf:
    """images[rows], indexed lazily (run_model reads it a batch at a time), so that a map's windows are never
    all held as pixels."""

    def __init__(self, images, rows: np.ndarray):
        self.images, self.rows = images, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> np.ndarray:
        return np.asarray(self.images[self.rows[index]])


def dihedral_view(images: np.ndarray, view: int) -> np.ndarray:
    """View 0-7 of (N, C, H, W) images: `view % 4` quarter turns, then mirrored left-right when view >= 4."""
    turned = np.rot90(images, view % 4, axes=(2, 3))
    return np.ascontiguousarray(turned[..., ::-1] if view >= 4 else turned)


def mix_weights(model: nn.Module, start: nn.Module, mix: float) -> None:
    """In place: model's floating-point weights and buffers become mix * model's + (1 - mix) * start's (the
    classifier excepted: the two networks' heads differ); integer buffers (batch counts) stay model's."""
    start_state = start.state_dict()
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if name.startswith("classifier.") or not value.is_floating_point():
                continue
            value.mul_(mix).add_(start_state[name].to(value.device, value.dtype), alpha=1.0 - mix)


@register_method("sdft")
class SDFT(FewShotMethod):
    description = (
        "Stepwise deep feature transfer: ImageNet -> base pool (linear head) -> support (cosine head, top fine-tuned)"
    )
    consumes = "images"
    # Moves with STEP1_VERSION: a row made from another step-1 network is another measurement. 3: step 1 and
    # step 2 in fixed micro-batches (methods/parallel.py)
    version = 3
    use_step1 = True
    head = "cosine"
    option_defaults = {**STEP1_DEFAULTS, **STEP2_DEFAULTS, **STEP2_LATER}  # the registry checks their types
    # fit gets the episode's class ids (what the user who labelled the support knows): `fuse` needs them
    takes_classes = True

    def __init__(self, **options):
        known = {**STEP1_DEFAULTS, **STEP2_DEFAULTS, **STEP2_LATER}
        unknown = set(options) - set(known)
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        self.opts = {**known, **options}
        for key, default in known.items():
            self.opts[key] = type(default)(self.opts[key])
        if not 0.0 <= self.opts["mix"] <= 1.0:
            raise UserError(f"{self.name}: mix={self.opts['mix']} is outside 0..1 (1: step 1's weights, 0: ImageNet's)")
        if self.opts["fuse"] < 0 or not 0.0 <= self.opts["label_smoothing"] < 1.0:
            raise UserError(f"{self.name}: fuse must be >= 0 and label_smoothing in [0, 1)")
        if self.opts["val_folds"] < 2:
            raise UserError(
                f"{self.name}: val_folds={self.opts['val_folds']}: step 1 holds out 1 of val_folds "
                "folds of the base pool, so it needs at least 2"
            )
        if self.opts["views"] not in (1, 8):
            raise UserError(f"{self.name}: views={self.opts['views']}: 1 (the image) or 8 (its dihedral views)")
        if not self.use_step1 and (self.opts["mix"] != 1.0 or self.opts["fuse"] != 0.0):
            raise UserError(f"{self.name}: mix and fuse act on step 1's network; this method has no step 1")

    def config(self) -> dict:
        return {"step1": self.use_step1, "head": self.head, **self.opts}

    def step1_key(self, ctx: Context) -> str:
        step1 = {k: self.opts[k] for k in STEP1_DEFAULTS}
        return cache_key(
            "sdft-step1",
            STEP1_VERSION,
            ctx.task_key,
            ctx.base_images_key(),
            backbone_name(ctx.backbone),
            weights_digest(ctx.backbone),
            step1,
            ctx.seed,
            *device_key(ctx.device),
        )

    def prepare(self, ctx: Context) -> None:
        super().prepare(ctx)
        source = self.step1_key(ctx) if self.use_step1 else f"imagenet-{weights_digest(ctx.backbone)}"
        network = source if self.opts["mix"] == 1.0 else f"{source}-mix{self.opts['mix']!r}"
        if self.opts["views"] != 1:
            network = f"{network}-views{self.opts['views']}"
        base = ctx.base_pool()[0]
        # only rows outside the base pool get activations: the base pool trains step 1 and is never in an episode
        key = cache_key(
            "sdft-acts",
            STEP2_VERSION,
            NUMERICS_VERSION,
            network,
            ctx.images_key(),
            backbone_name(ctx.backbone),
            self.opts["top_blocks"],
            "outside",
            cache_key(np.sort(base).tolist()),
            *device_key(ctx.device),
        )
        top, acts = None, None
        if self.opts["top_blocks"] == 0:  # warm: the cached top and activations, without timm or any image
            state = ctx.cache.cached_state_dict("sdft-top", key)
            acts = ctx.cache.cached_array("sdft-acts", key) if state is not None else None
            top = top_from_state(ctx.backbone, state) if acts is not None else None
            if top is not None:
                ctx.progress.log(
                    f"sdft step 1: cache hit ({source}), skipping training; the top and the activations "
                    f"entering it are cached too ({key})"
                    if self.use_step1
                    else f"{self.name}: the top and the activations entering it are cached ({key})"
                )
        if top is None:
            top, acts = self.cut_network(ctx, source if self.use_step1 else None, key)
            if self.opts["top_blocks"] == 0:
                state = cpu_state(top.state_dict())
                ctx.cache.put_state_dict("sdft-top", key, state)
                top = top_from_state(ctx.backbone, state)  # the same modules as on the warm path
        self.device = ctx.device
        self.acts = torch.from_numpy(acts).to(ctx.device)  # of every row outside the base pool, sent once
        self.n_images = len(self.acts) // self.opts["views"]  # view v of the i-th such row is row v * n_images + i
        n_rows = self.n_images + len(base)
        self.position = np.full(n_rows, -1, np.int64)  # handle -> its row in each view's block of self.acts
        self.position[rows_outside(n_rows, base)] = np.arange(self.n_images)
        self.top = top.to(ctx.device).eval()
        self.top_state = copy.deepcopy(top.state_dict())
        with torch.inference_mode():
            self.feature_dim = int(top(self.acts[:1]).flatten(1).shape[1])
        self.base_log_probs = None
        if self.opts["fuse"] > 0:
            self.base_log_probs = self.base_head_log_probs(ctx)

    def step1_head(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 1's linear head (weight, bias) from the cached checkpoint, on the activations' device; sets
        self.base_classes (the head's rows, in order)."""
        self.base_classes = np.unique(ctx.base_pool()[1])
        state = ctx.cache.cached_state_dict("sdft-step1", self.step1_key(ctx))
        if state is None or "classifier.weight" not in state:
            raise UserError(f"{self.name} needs SDFT's step-1 checkpoint in the cache; run with a writable --cache-dir")
        weight = state["classifier.weight"].float().to(self.device)
        bias = state["classifier.bias"].float().to(self.device)
        if weight.shape[0] != len(self.base_classes):
            raise UserError(
                f"{self.name}: the cached step-1 head has {weight.shape[0]} classes, the base pool "
                f"{len(self.base_classes)}; clear the cache's sdft-step1 entry"
            )
        return weight, bias

    def base_head_log_probs(self, ctx: Context) -> torch.Tensor:
        """Every image's log-probabilities under step 1's linear head, over all base classes, from the
        untouched top of the network step 2 starts from."""
        weight, bias = self.step1_head(ctx)
        with torch.inference_mode():
            logits = torch.cat([self.top(chunk).flatten(1) @ weight.T + bias for chunk in self.acts.split(1024)])
            log_probs = torch.log_softmax(logits, dim=1)
        return log_probs.reshape(self.opts["views"], self.n_images, -1).mean(0)  # a query's views, averaged

    refusal_hint = "; use fuse=0"  # what a user whose episodes `fuse` cannot serve should do

    def base_rows(self, classes) -> np.ndarray:
        """Positions of the episode's classes among the base classes; a one-line refusal where one is not."""
        if classes is None:
            raise UserError(
                f"{self.name}: needs the episode's class ids, which this command does not give{self.refusal_hint}"
            )
        classes = np.asarray(classes)
        positions = np.searchsorted(self.base_classes, classes)
        found = self.base_classes[np.minimum(positions, len(self.base_classes) - 1)] == classes
        if not found.all():
            raise UserError(
                f"{self.name}: needs every episode class to be a base class (this task's are not){self.refusal_hint}"
            )
        return positions

    def cut_network(self, ctx: Context, step1_key: str | None, acts_key: str) -> tuple[nn.Module, np.ndarray]:
        """(top, activations entering it for every image) of the step-1 network cached under `step1_key` (trained
        on a miss), or of step 0's without it."""
        images = functools.cache(ctx.images)  # decoded or loaded only if something below is not cached
        model = create_backbone(ctx.backbone, pretrained=True)
        check_splittable(model)  # before step 1 trains a network it cannot cut
        if step1_key is not None:
            self.load_step1(ctx, model, images, step1_key)
        model.reset_classifier(0)
        bottom, top = split_top(model, self.opts["top_blocks"])
        acts = ctx.cache.array("sdft-acts", acts_key, lambda: self.top_inputs(ctx, bottom, images()))
        return top, acts

    def load_step1(self, ctx: Context, model: nn.Module, images, key: str) -> None:
        """In place: `model` becomes the step-1 network cached under `key` (trained on a miss from the base pool's
        rows of `images()`), mixed with step 0's by `mix`."""
        base_idx, base_labels = ctx.base_pool()
        base_classes, dense = np.unique(base_labels, return_inverse=True)
        with torch.random.fork_rng(devices=[]):  # the new head's initial weights come from the run's seed,
            torch.manual_seed(ctx.seed)  # not from whatever drew on torch's global generator before
            model.reset_classifier(len(base_classes))
        state, cached = ctx.cache.state_dict(
            "sdft-step1", key, lambda: self.fit_step1(ctx, model, images, base_idx, dense, len(base_classes), key)
        )
        if cached:
            ctx.progress.log(f"sdft step 1: cache hit ({key}), skipping training")
        model.load_state_dict(state)
        if self.opts["mix"] != 1.0:
            mix_weights(model, create_backbone(ctx.backbone, pretrained=True), self.opts["mix"])

    def fit_step1(
        self, ctx: Context, model: nn.Module, images, base_idx: np.ndarray, dense: np.ndarray, n_classes: int, key: str
    ) -> dict:
        """Step 1's state dict, trained now on the base pool (rows `base_idx` of `images()`, classes `dense`);
        its duration is noted in the cache for the next run's forecast."""
        timing = step1_timing_key(backbone_name(ctx.backbone), ctx.image_size, ctx.device)
        forecast = step1_forecast(ctx.cache.note("timings", timing), len(base_idx), self.opts, ctx.image_size)
        ctx.progress.log(
            f"sdft step 1: fine-tuning {backbone_name(ctx.backbone)} on {len(base_idx)} base images, "
            f"{n_classes} classes (cached as {key}); {forecast}"
        )
        load = machine_load()
        started = time.perf_counter()
        state, history = train_step1(
            model,
            images()[base_idx],
            dense.astype(np.int64),
            ctx.base_groups(),
            self.opts,
            ctx.seed,
            ctx.progress.log,
            ctx.progress,
            ctx.device,
        )
        ctx.cache.put_note(
            "timings",
            timing,
            {
                "seconds": time.perf_counter() - started,
                "images": len(base_idx),
                "epochs": len(history),
                "image_epochs": len(base_idx) * len(history),
                "workers": training_workers(ctx.device),
                **({"load": load} if load is not None else {}),
            },
        )
        return state

    def top_inputs(self, ctx: Context, bottom: nn.Module, images: np.ndarray) -> np.ndarray:
        """The activations `bottom` gives every image, view after view (view 0: the images as they are)."""
        views = self.opts["views"]
        rows = rows_outside(len(images), ctx.base_pool()[0])
        if not len(rows):
            raise UserError(f"{self.name}: every row is in the base pool; there is nothing to answer episodes on")
        return np.concatenate(
            [
                run_model(
                    bottom,
                    dihedral_view(images[rows], view) if view else RowsOf(images, rows),
                    progress=ctx.progress,
                    description=f"sdft: activations entering the top, {len(rows)} rows outside the base pool"
                    + (f", view {view + 1}/{views}" if views > 1 else ""),
                    device=ctx.device,
                )
                for view in range(views)
            ]
        )

    def make_head(self, n_way: int) -> nn.Module:
        if self.head == "cosine":
            return CosineClassifier(self.feature_dim, n_way, scale=self.opts["scale"]).to(self.device)
        return nn.Linear(self.feature_dim, n_way).to(self.device)

    def fit(self, support_idx, support_y, n_way, rng, classes=None):
        self.fused_rows = None
        if self.base_log_probs is not None:
            self.fused_rows = torch.as_tensor(self.base_rows(classes), device=self.device)
        self.top.load_state_dict(self.top_state)
        self.top.eval()  # batch norm keeps step-1 statistics (see module docstring)
        x = self.acts[self.view_rows(support_idx)]
        y = torch.as_tensor(support_y, device=self.device).repeat(self.opts["views"])
        self.classifier = self.make_head(n_way)
        with Workers(device=self.device) as workers:  # one intra-op thread here too: the same bits in any caller
            with torch.no_grad():
                features = self.top(x).flatten(1)
                if isinstance(self.classifier, CosineClassifier):
                    self.classifier.init_from_prototypes(features, y)
                else:  # same "pretraining" for the ablation: weights = class means, zero bias
                    self.classifier.weight.copy_(class_means(features, torch.arange(len(y), device=y.device), y, n_way))
                    self.classifier.bias.zero_()
            self.train_step2(workers, x, y)

    def train_step2(self, workers: Workers, x: torch.Tensor, y: torch.Tensor) -> None:
        """`steps` full-batch Adam steps of the top and the head on the support, each batch's gradient summed
        over fixed micro-batches computed side by side (methods/parallel.py)."""
        params = [*self.top.parameters(), *self.classifier.parameters()]
        opt = Adam(
            [  # torch.optim.Adam's arithmetic without importing torch._dynamo (methods/optim.py)
                {"params": self.top.parameters(), "lr": self.opts["lr_top"]},
                {"params": self.classifier.parameters(), "lr": self.opts["lr_head"]},
            ]
        )
        parts = micro_batches(len(y), STEP2_MICRO_BATCH, even=True)

        def part_loss(i: int) -> torch.Tensor:
            rows = parts[i]
            return F.cross_entropy(
                self.classifier(self.top(x[rows]).flatten(1)),
                y[rows],
                reduction="sum",
                label_smoothing=self.opts["label_smoothing"],
            ) / len(y)

        for _ in range(self.opts["steps"]):
            parallel_backward(workers, params, len(parts), part_loss)
            opt.step()

    def positions(self, idx) -> torch.Tensor:
        """Where handles `idx` are in each view's block of self.acts; a base-pool handle is refused."""
        position = self.position[np.asarray(idx, np.int64)]
        if (position < 0).any():
            raise UserError(
                f"{self.name}: asked for rows of the base pool, which is never in an episode and has no "
                "activations here"
            )
        return torch.as_tensor(position, device=self.device)

    def view_rows(self, idx) -> torch.Tensor:
        """Rows of self.acts holding every view of images `idx`, view by view (view 0: the images as they are)."""
        position = self.positions(idx)
        return torch.cat([position + view * self.n_images for view in range(self.opts["views"])])

    def predict(self, query_idx):
        self.top.eval()
        self.classifier.eval()
        query = self.positions(query_idx)
        with torch.inference_mode():
            per_view = self.classifier(self.top(self.acts[self.view_rows(query_idx)]).flatten(1))
            scores = per_view.reshape(self.opts["views"], len(query), -1).mean(0)
            if self.fused_rows is not None:
                scores = (
                    torch.log_softmax(scores, dim=1)
                    + self.opts["fuse"] * self.base_log_probs[query][:, self.fused_rows]
                )
            return to_numpy(scores)


@register_method("sdft-no-step1")
class SDFTNoStep1(SDFT):
    description = "SDFT ablation: ImageNet backbone straight to step 2 (no Mars base-pool fine-tuning)"
    version = 2  # no step 1, so STEP1_VERSION does not concern it; 2: step 2 in fixed micro-batches
    use_step1 = False


@register_method("sdft-linear-head")
class SDFTLinearHead(SDFT):
    description = "SDFT ablation: step 2 with a linear head (initialised from class means) instead of cosine"
    head = "linear"
