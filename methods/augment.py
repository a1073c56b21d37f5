"""Augmentation for orbital images: flips, 90-degree rotations, small crops, brightness; explicit generator.

Orbital images have no canonical "up", so the dihedral group is a safe augmentation; crops are kept small
(scale >= 0.8) so that a landform stays in view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


def flip_turn(img: torch.Tensor, flip_lr: bool, flip_ud: bool, turns: int) -> torch.Tensor:
    """One element of the dihedral group applied to a (C, S, S) image: mirror, flip, then quarter turns."""
    if flip_lr:
        img = img.flip(-1)
    if flip_ud:
        img = img.flip(-2)
    return torch.rot90(img, int(turns), dims=(-2, -1))


def dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image of (B, C, S, S) mirrored or not and turned by 0-3 quarter turns (all 8 elements of the
    dihedral group), drawn from `gen`."""
    flips = torch.rand(len(x), generator=gen) < 0.5
    turns = torch.randint(0, 4, (len(x),), generator=gen)
    return torch.stack([flip_turn(img, bool(f), False, int(t)) for img, f, t in zip(x, flips, turns)])


@dataclass(frozen=True)
class Draws:
    """The random draws of augment_batch for a batch, drawn first so that slices of the batch can be augmented
    apart (on worker threads) with the draws the whole batch would have used."""

    flips: torch.Tensor  # (B, 2) bool: mirror left-right, flip up-down
    turns: torch.Tensor  # (B,) quarter turns
    scales: torch.Tensor  # (B,) side of the crop, as a fraction of the image's
    offsets: torch.Tensor  # (B, 2) where the crop sits, as fractions of the free room
    gains: torch.Tensor  # (B,) brightness factor

    def __getitem__(self, rows: slice) -> Draws:
        return Draws(self.flips[rows], self.turns[rows], self.scales[rows], self.offsets[rows], self.gains[rows])


def draw_augmentation(b: int, gen: torch.Generator, min_crop: float = 0.8, brightness: float = 0.2) -> Draws:
    """augment_batch's draws for b images, in its order (the generator moves as augment_batch moves it)."""
    flips = torch.rand(b, 2, generator=gen) < 0.5
    turns = torch.randint(0, 4, (b,), generator=gen)
    scales = min_crop + (1 - min_crop) * torch.rand(b, generator=gen)
    offsets = torch.rand(b, 2, generator=gen)
    gains = 1 + brightness * (2 * torch.rand(b, generator=gen) - 1)
    return Draws(flips, turns, scales, offsets, gains)


def apply_augmentation(x: torch.Tensor, draws: Draws) -> torch.Tensor:
    """x: (B, 3, S, S) float in [0, 1] -> each image cropped, resized back, flipped, turned and brightened as
    `draws` says (image by image: a slice of a batch gets the bits the whole batch would)."""
    b, _, size, _ = x.shape
    out = torch.empty_like(x)
    for i in range(b):
        img = x[i]
        crop = max(1, int(round(size * float(draws.scales[i]))))
        top = int(draws.offsets[i, 0] * (size - crop))
        left = int(draws.offsets[i, 1] * (size - crop))
        img = img[:, top : top + crop, left : left + crop]
        if crop != size:
            img = F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        img = flip_turn(img, bool(draws.flips[i, 0]), bool(draws.flips[i, 1]), int(draws.turns[i]))
        out[i] = (img * draws.gains[i]).clamp_(0, 1)
    return out


def augment_batch(
    x: torch.Tensor, gen: torch.Generator, min_crop: float = 0.8, brightness: float = 0.2
) -> torch.Tensor:
    """x: (B, 3, S, S) float in [0, 1] -> augmented copy, same shape."""
    return apply_augmentation(x, draw_augmentation(len(x), gen, min_crop, brightness))
