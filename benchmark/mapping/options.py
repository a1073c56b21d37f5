"""What a map does besides the run settings (common.settings): torch-free, so that `bench` parses fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MapOptions:
    """What a map does besides the run settings: smoothing, where and how large its figures are, chunking."""

    smoothing: str = "none"
    strength: float | None = None  # None: smoothing.DEFAULT_STRENGTH
    out: Path | None = None  # the folder of the outputs; None: nothing is written
    preview: int = 1600  # longest side of the PNG figures in pixels
    chunk: int = 2048  # windows per predict call (a transductive method: all at once)
    # ask some windows again, each on its own, in a fresh process (in-process maps; a sandboxed map always is)
    check: bool = True
