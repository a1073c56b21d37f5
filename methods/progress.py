"""A minimal progress protocol, so that methods report long steps without knowing about the terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Progress:
    """Silent by default; the CLI passes one that draws rich progress bars and prints status lines."""

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        yield lambda n=1: None

    def log(self, message: str) -> None:
        pass


SILENT = Progress()
