"""The user's Ctrl-C, told apart from a KeyboardInterrupt that method code raises.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to be, so inside a
method's `fit` the user's Ctrl-C and a plugin's `raise KeyboardInterrupt` look the same. `recording_sigint()`
installs a SIGINT handler that notes the signal before raising the KeyboardInterrupt, as Python's own handler
does; `by_user()` then says which one it was. The user's interrupts the run (rows saved, exit 130); a plugin's
is that method's failure (benchmark.runner.blamed).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

_received = False  # a SIGINT arrived since recording_sigint() was entered
_recording = False  # the handler is installed


def _on_sigint(signum, frame):
    global _received
    _received = True
    raise KeyboardInterrupt


@contextmanager
def recording_sigint():
    """Within the block, SIGINT is recorded, then raises KeyboardInterrupt as before. Only Python's default
    handler is replaced; where SIGINT is ignored (`nohup`), no KeyboardInterrupt can be the user's; a program
    that handles SIGINT its own way keeps its handler, and every KeyboardInterrupt counts as the user's."""
    global _received, _recording
    handler = signal.getsignal(signal.SIGINT)
    replace = handler is signal.default_int_handler
    if threading.current_thread() is not threading.main_thread() or not (replace or handler == signal.SIG_IGN):
        yield
        return
    previous_state = _received, _recording
    _received, _recording = False, True
    if replace:
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        if replace:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        _received, _recording = previous_state


def by_user() -> bool:
    """Whether a KeyboardInterrupt being handled now may be the user's: a SIGINT arrived, or no handler records
    them (then nothing tells the two apart, and the run stops as for a Ctrl-C)."""
    return _received or not _recording
