"""Decoded image arrays and frozen backbone features for a whole dataset table, cached on disk.

Images are decoded once into a pre-resized uint8 array (keyed by the table's content fingerprint, the size and
the decoder's version), so decoding stays off every later critical path; features are keyed by that plus
backbone and weights.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch

from common.settings import DEFAULTS
from methods.backbones import DEFAULT_BACKBONE, backbone_name, create_backbone, normalize, weights_digest
from methods.cache import Cache, cache_key
from methods.devices import device_key, to_numpy
from methods.progress import SILENT, Progress
from tasks.datasets.base import ImageTable
from tasks.imageio import DECODER_VERSION, fit_square, read_image

# Bump when decoding/resizing changes, so caches are recomputed (keys also hold tasks.imageio.DECODER_VERSION).
# Decoding is tasks.imageio's: 16-bit and float images stretched, not saturated; EXIF orientation applied.
PREPROCESSING_VERSION = 2
# Bump when the arithmetic of forward passes changes (e.g. the thread policy): features and activations are
# recomputed, so that a clean cache reproduces cached results bit for bit.
NUMERICS_VERSION = 2
DEFAULT_IMAGE_SIZE = DEFAULTS.image_size  # common/settings.py holds the run defaults

# Worker threads for forward passes in run_model (None: batches run one after another on torch's intra-op
# threads) and for training's micro-batches (methods/parallel.py). `bench run --threads N` sets it inside
# thread_policy, which pins torch (and BLAS) to one intra-op thread: torch/oneDNN split convolutions and long
# reductions in chunks that depend on the thread count (measured: EfficientNet-Lite features differ in the 6th
# digit between 1 and 2 threads for a 16-image batch), whereas N workers each running whole, fixed batches on
# one thread give the same bits for any N.
_inference_threads: int | None = None


@contextmanager
def torch_threads(n: int | None):
    """Run the block with n intra-op torch threads (None: unchanged), then restore the previous count."""
    previous = torch.get_num_threads()
    if n is not None and n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


@contextmanager
def thread_policy(workers: int):
    """Deterministic threading for a whole run: one intra-op thread (torch and BLAS) for everything, and
    `workers` threads that run run_model's batches and training's micro-batches side by side (bit-identical
    for any count)."""
    global _inference_threads
    from threadpoolctl import threadpool_limits

    saved = _inference_threads
    _inference_threads = int(workers)
    try:
        with threadpool_limits(limits=1), torch_threads(1):
            yield
    finally:
        _inference_threads = saved


def inference_threads() -> int | None:
    """The worker count set by thread_policy (None outside it)."""
    return _inference_threads


def load_image(path: str, size: int) -> np.ndarray:
    """(3, size, size) uint8: the file decoded by tasks.imageio (16-bit and float images stretched, EXIF
    orientation applied), RGB (greyscale repeated), shorter side resized and centre-cropped."""
    return fit_square(read_image(path, "RGB", "image"), size)


def decode_images(paths, size: int, progress: Progress = SILENT, workers: int | None = None) -> np.ndarray:
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    workers = workers or min(4, os.cpu_count() or 1)
    with progress.bar(f"decoding {len(paths)} images", len(paths)) as advance, ThreadPoolExecutor(workers) as pool:
        for i, array in enumerate(pool.map(lambda p: load_image(p, size), paths, chunksize=32)):
            out[i] = array
            advance(1)
    return out


def images_key(table: ImageTable, size: int) -> str:
    """Identifies the decoded image array of a table: its content fingerprint, the size and the decoder."""
    return cache_key("images", table.fingerprint(), size, PREPROCESSING_VERSION, DECODER_VERSION)


def image_array(table: ImageTable, size: int, cache: Cache, progress: Progress = SILENT) -> np.ndarray:
    return cache.array("images", images_key(table, size), lambda: decode_images(list(table.paths), size, progress))


@torch.inference_mode()
def run_model(
    module: torch.nn.Module,
    images: np.ndarray,
    batch_size: int = 64,
    progress: Progress = SILENT,
    description: str = "extracting features",
    device: torch.device | None = None,
) -> np.ndarray:
    """Apply `module` in eval mode to uint8 images in batches; returns float32 outputs flattened per image.

    With `device` the module is moved there and each uint8 batch is sent there once (a quarter of the bytes
    of its float copy); the outputs come back to the CPU as numpy. Under thread_policy(N), N worker threads
    each run whole batches on one intra-op thread: the batches and the arithmetic within them do not depend
    on N, so neither do the outputs."""
    was_training = module.training
    if device is not None:
        module.to(device)
    module.eval()
    starts = range(0, len(images), batch_size)

    def forward(start: int) -> np.ndarray:
        with torch.inference_mode():
            batch = torch.from_numpy(np.asarray(images[start : start + batch_size]))
            if device is not None:
                batch = batch.to(device)
            return to_numpy(module(normalize(batch)).float())

    chunks = []
    with progress.bar(description, len(images)) as advance:
        if _inference_threads is None:
            for start in starts:
                chunks.append(forward(start))
                advance(len(chunks[-1]))
        else:
            with ThreadPoolExecutor(_inference_threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
                for chunk in pool.map(forward, starts):  # in order
                    chunks.append(chunk)
                    advance(len(chunk))
    module.train(was_training)
    return np.concatenate(chunks) if chunks else np.empty((0,), np.float32)


def feature_extractor(backbone: str) -> torch.nn.Module:
    model = create_backbone(backbone, pretrained=True)
    model.reset_classifier(0)  # pooled features
    return model


def features_key(table: ImageTable, backbone: str, image_size: int, device: torch.device | None = None) -> str:
    """Identifies frozen features; caches derived from them (meta-trained heads) put it in their keys. The
    device type is part of it off the CPU (methods/devices.py says why)."""
    return cache_key(
        "features",
        images_key(table, image_size),
        NUMERICS_VERSION,
        backbone_name(backbone),
        weights_digest(backbone),
        *device_key(device),
    )


def frozen_features(
    table: ImageTable,
    cache: Cache,
    backbone: str = DEFAULT_BACKBONE,
    image_size: int = DEFAULT_IMAGE_SIZE,
    progress: Progress = SILENT,
    device: torch.device | None = None,
) -> np.ndarray:
    """(n_images, D) float32 pooled features of the ImageNet backbone for every image of the table, computed
    on `device` (default: the CPU)."""
    key = features_key(table, backbone, image_size, device)

    def compute():
        images = image_array(table, image_size, cache, progress)
        return run_model(
            feature_extractor(backbone),
            images,
            progress=progress,
            description=f"{backbone_name(backbone)} features",
            device=device,
        )

    return cache.array("features", key, compute)
