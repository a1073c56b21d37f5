"""A run session: the settings that live in process-wide state, applied for the length of a run.

Two settings cannot be handed down as values: where content digests of dataset files are kept (tasks read
them wherever a table is fingerprinted; they live in the run's cache folder) and the thread policy
(methods.features.thread_policy: one intra-op thread, `threads` workers). Nothing sets them on construction
(a `Cache` is only a folder); `session(settings)` sets both on entry and restores what was there on exit, so
sessions nest and a library caller's state is left as it was.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager

from common.settings import Settings


@contextmanager
def digests_in(folder):
    """Keep dataset-file digests under `folder` for the block, then where they were kept before."""
    from tasks.datasets import content

    saved = content.digest_cache_folder()
    content.use_digest_cache(folder)
    try:
        yield
    finally:
        content.use_digest_cache(saved)


@contextmanager
def session(settings: Settings, thread_policy: bool = True):
    """Apply `settings` for the block: digests of dataset files in `settings.cache_dir`/digests and (with
    `thread_policy`) the deterministic thread policy with `settings.threads` workers (None: torch's thread
    count on entry, i.e. all cores); both are restored on exit."""
    with ExitStack() as stack:
        stack.enter_context(digests_in(settings.cache_dir / "digests"))
        if thread_policy:
            import torch

            from methods.features import thread_policy as policy

            stack.enter_context(policy(settings.threads or torch.get_num_threads()))
        yield settings
