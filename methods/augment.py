"""Augmentation for orbital images: flips, 90-degree rotations, small crops, brightness; explicit generator.

Orbital images have no canonical "up", so the dihedral group is a safe augmentation; crops are kept small
(scale >= 0.8) so that a landform stays in view.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def augment_batch(x: torch.Tensor, gen: torch.Generator, min_crop: float = 0.8, brightness: float = 0.2) -> torch.Tensor:
    """x: (B, 3, S, S) float in [0, 1] -> augmented copy, same shape."""
    b, _, size, _ = x.shape
    out = torch.empty_like(x)
    flips = torch.rand(b, 2, generator=gen) < 0.5
    turns = torch.randint(0, 4, (b,), generator=gen)
    scales = min_crop + (1 - min_crop) * torch.rand(b, generator=gen)
    offsets = torch.rand(b, 2, generator=gen)
    gains = 1 + brightness * (2 * torch.rand(b, generator=gen) - 1)
    for i in range(b):
        img = x[i]
        crop = max(1, int(round(size * float(scales[i]))))
        top = int(offsets[i, 0] * (size - crop))
        left = int(offsets[i, 1] * (size - crop))
        img = img[:, top : top + crop, left : left + crop]
        if crop != size:
            img = F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        if flips[i, 0]:
            img = img.flip(-1)
        if flips[i, 1]:
            img = img.flip(-2)
        img = torch.rot90(img, int(turns[i]), dims=(-2, -1))
        out[i] = (img * gains[i]).clamp_(0, 1)
    return out
