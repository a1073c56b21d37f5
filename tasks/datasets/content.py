"""What an image is by content rather than by where it lies: SHA-256 of each file's bytes."""
from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def file_digests(paths, cache_dir=None) -> list[str]:
    """SHA-256 hex digest of each file's bytes, in the order given. (`cache_dir` is accepted for callers that
    keep digests between runs; nothing is cached here.)"""
    digests = []
    for path in paths:
        h = hashlib.sha256()
        with open(Path(path), "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
        digests.append(h.hexdigest())
    return digests
