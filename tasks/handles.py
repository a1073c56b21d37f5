"""Row handles: the numbers a method uses for rows, chosen so that they say nothing about class or scene.

A task's table lists its images in whatever order its reader produced, and most readers list them class by
class (a folder per class, AID, most CSVs): a row's number would tell its class. A method therefore never sees
row numbers. It sees handles: the rows ranked by the SHA-256 of each image's bytes. That rank depends on an
image's content alone, so neither the value of a handle nor the order of a list of handles carries anything
about its class or scene, and no method can recompute the row numbers from what it is handed (it never holds
the files' bytes). It is deterministic, so the same data give the same handles on every run and machine.

Only the harness holds a RowHandles object; methods receive arrays already in handle order.
"""

from __future__ import annotations

import hashlib

import numpy as np

HANDLES_VERSION = 1


class RowHandles:
    """The bijection between a table's rows and the handles a method sees."""

    def __init__(self, digests):
        digests = [str(d) for d in digests]
        # ties (byte-identical files) are broken by row, which orders two copies of one image only
        self.rows = np.array(sorted(range(len(digests)), key=lambda r: (digests[r], r)), dtype=np.int64)
        self.handles = np.empty(len(digests), dtype=np.int64)
        self.handles[self.rows] = np.arange(len(digests), dtype=np.int64)
        self.rows.flags.writeable = False
        self.handles.flags.writeable = False

    @classmethod
    def identity(cls, n: int) -> RowHandles:
        """Handles equal to row numbers: for tools and tests that address rows by row number. The harness never
        hands a method these."""
        return cls([f"{r:020d}" for r in range(n)])

    @classmethod
    def of_table(cls, table, cache_dir=None) -> RowHandles:
        return cls(table.content_digests(cache_dir))

    @classmethod
    def of_arrays(cls, arrays) -> RowHandles:
        """Handles of rows given as arrays (a scene's windows): ranked by the digest of each one's bytes."""
        return cls(hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for a in arrays)

    def __len__(self) -> int:
        return len(self.rows)

    def of_rows(self, rows) -> np.ndarray:
        """The handles of table rows (any shape)."""
        return self.handles[np.asarray(rows, dtype=np.int64)]

    def to_rows(self, handles) -> np.ndarray:
        """The table rows of handles (any shape)."""
        return self.rows[np.asarray(handles, dtype=np.int64)]

    def in_handle_order(self, by_row: np.ndarray) -> np.ndarray:
        """An array indexed by row (first axis), re-indexed by handle: a new array."""
        return np.ascontiguousarray(by_row[self.rows])
