"""What every result row records about how it was made, besides what was asked for.

Two kinds: the run's (`Provenance`: the git commit and package versions of the code that ran), and each
method's conditions (`method_conditions`: source, data identity, backbone and its weights' digest, image size,
preprocessing, device, method version and config, transductive, isolated), which are part of a row's key
(benchmark/results.Schema.conditions). Every protocol (benchmark/protocols/) takes both from here.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from benchmark import __version__
from methods.devices import device_name
from methods.registry import config_text
from methods.registry import method_version as registered_version
from tasks.registry import Task


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> str:
    found = {"marsfsl": __version__}
    for dist in ("torch", "timm", "numpy", "scikit-learn"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return " ".join(f"{k}={v}" for k, v in found.items())


@dataclass(frozen=True)
class Provenance:
    """The code a run's rows were made by: its git commit (rows of another commit are not reused without
    --reuse-stale, results.reusable_units) and the versions of marsfsl and the packages that compute."""

    commit: str
    versions: str

    @classmethod
    def current(cls) -> Provenance:
        return cls(git_commit(), versions())

    def columns(self) -> dict:
        """The provenance columns of an episode or fixed-K row."""
        return {"git_commit": self.commit, "versions": self.versions}


def method_config(method) -> str:
    return config_text(method)  # a config() that JSON cannot hold is refused, naming the method


def method_version(method) -> int:
    return registered_version(method)  # a version that is no integer is refused, naming the method


def is_transductive(method) -> bool:
    """Whether the method reads its query's features (methods.base.FewShotMethod.transductive)."""
    return bool(getattr(type(method), "transductive", False))


def preprocessing_id() -> str:
    """Names how pixels become a backbone's input: the image decoder's and the feature pipeline's versions."""
    from methods.features import PREPROCESSING_VERSION
    from tasks.imageio import DECODER_VERSION

    return f"features{PREPROCESSING_VERSION}+decoder{DECODER_VERSION}"


def source_id(task: Task) -> str:
    """The dataset a task's methods pre-train on when it is not the task's own base pool ("" when it is)."""
    source = getattr(task, "source", None) or ""
    if not isinstance(source, str):
        name = getattr(source, "name", type(source).__name__)
        fingerprint = getattr(source, "fingerprint", None)
        source = f"{name}@{fingerprint()}" if callable(fingerprint) else str(name)
    return source


def method_conditions(
    task: Task, backbone: str, image_size: int, device: torch.device, methods, isolated: bool = False
) -> list[dict]:
    """Per method: the source, data identity, backbone (its name and its weights' digest), image size,
    preprocessing, device, method version and config, whether it is transductive and whether it runs isolated
    (--isolate), that its rows on `task` are made under (every command that runs methods keys its rows on
    these). The data identity is computed once per call."""
    from methods.backbones import backbone_name, weights_digest

    shared = {
        "source": source_id(task),
        "data": task.fingerprint(),
        "backbone": backbone_name(backbone),
        "weights": weights_digest(backbone),
        "image_size": image_size,
        "preprocessing": preprocessing_id(),
        "device": device_name(device),
    }
    return [
        {
            **shared,
            "method_version": method_version(method),
            "config": method_config(method),
            "transductive": int(is_transductive(method)),
            "isolated": int(isolated),
        }
        for method in methods
    ]
