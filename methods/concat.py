"""Rows of several read-only arrays, one after another, indexed like one array without ever being joined: what a
map hands a method as ctx.images() (the base task's decoded images, then the scene's windows as a read-only
memory map of the cache, benchmark/mapping/context.py), so a scene's pixels never all sit in memory."""

from __future__ import annotations

import numpy as np


def _read_only(array: np.ndarray) -> np.ndarray:
    """`array` itself when it is a read-only memory map (its pages stay on disk), else a read-only copy."""
    if isinstance(array, np.memmap) and not array.flags.writeable:
        return array
    out = np.array(array, copy=True)
    out.flags.writeable = False
    return out


class ConcatRows:
    """(sum of lengths, *row shape) array-like: row i of the whole is row i - offset of the part holding it.

    Supports len(), .shape, .dtype, .ndim, .copy() and indexing by an int, a slice or an integer array (what
    methods and run_model use); every index but an int returns a fresh array."""

    def __init__(self, parts):
        parts = [_read_only(np.asarray(part) if not isinstance(part, np.ndarray) else part) for part in parts]
        if not parts or any(p.shape[1:] != parts[0].shape[1:] or p.dtype != parts[0].dtype for p in parts):
            raise ValueError("ConcatRows needs one or more arrays of one row shape and dtype")
        self._parts = tuple(parts)
        self._starts = np.cumsum([0] + [len(p) for p in parts])
        self.dtype = parts[0].dtype
        self.shape = (int(self._starts[-1]),) + parts[0].shape[1:]
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def parts(self) -> tuple[np.ndarray, ...]:
        """The read-only arrays, in order (what a sandboxed method is handed, benchmark/sandbox.py)."""
        return self._parts

    def copy(self) -> ConcatRows:
        """Another view of the same read-only parts: as good as a copy, without copying a memory map into RAM."""
        return ConcatRows(self._parts)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            index = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= index < len(self):
                raise IndexError(f"row {index} out of range for {len(self)} rows")
            part = int(np.searchsorted(self._starts, index, side="right")) - 1
            return np.array(self._parts[part][index - self._starts[part]])
        positions = np.arange(len(self))[index]
        out = np.empty((len(positions),) + self.shape[1:], self.dtype)
        part_of = np.searchsorted(self._starts, positions, side="right") - 1
        for part in np.unique(part_of):
            here = part_of == part
            out[here] = self._parts[part][positions[here] - self._starts[part]]
        return out
