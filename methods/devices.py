"""Where network passes run: `--device auto|cpu|cuda|cuda:N|mps` resolved to a torch.device, and how a device
enters cache keys.

Features, activations and checkpoints computed on an accelerator differ from the CPU's in the last bits (other
kernels, other summation orders, TF32 on recent GPUs), and results derived from them differ accordingly. So
cache entries are keyed by the device *type* (`device_key`): a CPU run never reads a GPU's features and the
other way round, and a results row records the device it was made on. The CPU's part of a key is empty, so
every key computed before devices existed (and every shipped reference row) stays valid. Devices of one type
(cuda:0, cuda:1) share entries: the same kernels give the same bits on identical cards.
"""

from __future__ import annotations

import torch

from common.errors import UserError

CPU = torch.device("cpu")
CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(text: str | torch.device | None) -> torch.device:
    """The torch.device that `--device TEXT` names; `auto` (or None) is the first accelerator torch sees, else
    the CPU. An unknown or unavailable device is a one-line UserError."""
    if isinstance(text, torch.device):
        return text
    name = (text or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps") if mps is not None and mps.is_available() else CPU
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {text!r} is not a device; use {CHOICES}") from None
    if device.type == "cpu":
        return CPU
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {text}: torch sees no CUDA device here; use --device cpu (or auto)")
        index = 0 if device.index is None else device.index
        if index >= count:
            raise UserError(f"--device {text}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", index)
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UserError(f"--device {text}: torch sees no MPS (Apple GPU) device here; use --device cpu (or auto)")
        return device
    raise UserError(f"--device {text!r} is not supported; use {CHOICES}")


def device_name(device: torch.device | None) -> str:
    """What results rows and run headers record: the device type (cpu, cuda, mps)."""
    return (device or CPU).type


def device_key(device: torch.device | None) -> tuple:
    """The part of a cache key that the device determines: nothing on the CPU (keys from before devices stay
    valid), the device type elsewhere."""
    kind = device_name(device)
    return () if kind == "cpu" else (f"device={kind}",)


def to_numpy(x: torch.Tensor):
    """A result back on the CPU as numpy, for the harness (one copy from an accelerator)."""
    return x.detach().cpu().numpy()


def cpu_state(state: dict) -> dict:
    """A state dict on the CPU, as caches store checkpoints (loadable on any device). On the CPU it is the same
    object, so checkpoints written on the CPU keep their bytes."""
    if all(v.device.type == "cpu" for v in state.values()):
        return state
    out = type(state)((k, v.detach().cpu()) for k, v in state.items())
    if hasattr(state, "_metadata"):
        out._metadata = state._metadata
    return out


def available_devices() -> list[tuple[str, str]]:
    """(name, description) of every device torch sees here, the CPU first."""
    import os

    found = [("cpu", f"{os.cpu_count() or 1} cores, torch {torch.get_num_threads()} threads")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            found.append((f"cuda:{i}", torch.cuda.get_device_name(i)))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append(("mps", "Apple GPU"))
    return found
