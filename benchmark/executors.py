"""Executors: who answers a prepared method's episodes. `local` is the pipeline's own process (benchmark/pipeline.py,
which takes its executor from the protocol: runner.make_executor); `ray` spreads
chunks of episodes over Ray workers (one machine or a cluster) and leaves everything else to the driver.

The unit of work is (method, shots, a chunk of episodes). The driver prepares each method once (features,
SDFT's step-1 checkpoint and activations, meta-trained heads: computed or read from the driver's cache), puts
the prepared method and each episode set's query-blind view (tasks.episodes.BlindEpisodes) into Ray's object
store once, and submits the chunks. A worker gets them from the object store, so it needs neither the data,
nor the cache folder, nor any recomputation: only this code and its packages (the same versions; `bench run`
records the driver's). Each worker runs torch on one intra-op thread, as the local executor does under
`thread_policy`, so its rows are the same bits.

Workers answer, the driver scores: a worker, where plugin code runs, receives supports, support labels and
query rows (ascending, so their order says nothing of their classes) and returns scores; the query labels
(the EpisodeSet, fixed-K's test labels) never leave the driver, which scores what comes back.

A worker process that dies (killed, out of memory, its machine gone) is retried by Ray (`max_retries`); an
exception a method raises is not retried but fails the method as on the local executor. Only the driver writes
the results file (the same lock, resume and rows as `local`), chunk by chunk in episode order.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

from common.errors import UserError
from common.settings import DEFAULTS
from tasks.episodes import BlindEpisodes
from tasks.protocols import BlindFixedKSet

INSTALL = "Ray is not installed; install it with `pip install -e '.[ray]'` (or `pip install \"ray==2.*\"`)"
CHUNKS_PER_WORKER = 4  # enough chunks to balance uneven workers, few enough to amortise each task's start
RETRIES = 3  # Ray resubmits a chunk whose worker process died this many times
CONNECT_TIMEOUT = DEFAULTS.ray_timeout  # seconds --ray-address may take to accept a connection (--ray-timeout)


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL) from None
    return ray


def start_ray(address: str | None, log=print, timeout: float = CONNECT_TIMEOUT):
    """Connect to the Ray instance at `address` ('auto': the one `ray start` runs here), or start a local one
    sized to the machine; an instance this process already holds is used as it is. Returns (ray, workers).
    An address where nothing answers within `timeout` seconds is a one-line error (see wait_for_address)."""
    ray = import_ray()
    if not ray.is_initialized():
        if address:
            wait_for_address(address, timeout)
        try:
            if address:
                ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
            else:
                # address="local": a new instance, never one that `ray start` happens to run on this machine
                ray.init(
                    address="local",
                    num_cpus=os.cpu_count() or 1,
                    include_dashboard=False,
                    logging_level="WARNING",
                    log_to_driver=False,
                )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"--ray-address {address}" if address else "a local Ray instance"
            raise UserError(f"cannot start or reach {where}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    log(f"ray: {workers} worker slots ({'cluster at ' + address if address else 'local instance'})")
    return ray, workers


def bootstrap_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) that connecting to `address` starts with: HOST:PORT, ray://HOST:PORT (Ray Client), or for
    'auto' the instance `ray start` recorded on this machine; None where there is nothing to probe ('local',
    'auto' with no instance recorded: Ray itself says so at once)."""
    text = address.strip()
    if text == "auto":
        try:  # Ray's own lookup of the recorded instance; private, so any failure leaves the check to Ray
            from ray._private.services import canonicalize_bootstrap_address

            text = canonicalize_bootstrap_address("auto") or ""
        except Exception:
            return None
    text = text.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def wait_for_address(address: str, timeout: float) -> None:
    """Return once something accepts a connection at `address`'s endpoint, trying again until `timeout` seconds
    have passed; then a one-line UserError. Ray's own connect retries an address where nothing listens for
    minutes, printing warnings, so the run would look hung."""
    import socket

    endpoint = bootstrap_endpoint(address)
    if endpoint is None:
        return
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection(endpoint, timeout=max(0.05, min(left, 5.0))):
                return
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
        if time.monotonic() + 0.5 > deadline:
            break
        time.sleep(0.5)
    raise UserError(
        f"--ray-address {address}: nothing answers at {endpoint[0]}:{endpoint[1]} within {timeout:g} s "
        f"({reason}); start Ray there (`ray start --head`), correct the address, or wait longer with "
        "--ray-timeout SECONDS"
    )


_held: dict[str, object] = {}  # in a worker: object-store refs already fetched -> their values
HELD = 4  # values a worker keeps (a run's current method and query-blind episode views)


def _fetch(ref):
    """ray.get(ref), once per worker process: a prepared method (SDFT's activations: tens of MB) is fetched and
    unpickled once per worker, not once per chunk. Chunks use it as the local executor uses its one method
    object for every episode (fit resets what an episode changes)."""
    import ray

    key = ref.hex()
    if key not in _held:
        while len(_held) >= HELD:
            _held.pop(next(iter(_held)))
        _held[key] = ray.get(ref)
    return _held[key]


def _call(fn, held: list, *args):
    """On a worker: (list(fn(*values of held, *args)), worker name, busy seconds), on one intra-op thread (torch
    and BLAS) as the local executor runs under thread_policy. `held`: object-store refs (in a list, so that Ray
    hands them over unresolved and `_fetch` can keep their values). `fn` comes from the caller
    (benchmark.runner.episode_answers, benchmark.fixedk.fixed_k_answers), so this module imports neither."""
    import socket

    import torch
    from threadpoolctl import threadpool_limits

    from benchmark.interrupts import by_user, recording_sigint
    from benchmark.scoring import Escaped

    started = time.perf_counter()
    # recording SIGINT: a KeyboardInterrupt the method raises is its failure here too, not a cancelled task
    with threadpool_limits(limits=1), recording_sigint():
        torch.set_num_threads(1)
        try:
            out = list(fn(*[_fetch(ref) for ref in held], *args))
        except KeyboardInterrupt as exc:
            if by_user():
                raise
            raise Escaped.of(exc) from None
        except SystemExit as exc:
            raise Escaped.of(exc) from None
    return out, f"{socket.gethostname()}:{os.getpid()}", time.perf_counter() - started


_remote = None


def remote_call(ray):
    global _remote
    if _remote is None:
        _remote = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(_call)
    return _remote


def chunks_of(pending: list[int], workers: int) -> list[list[int]]:
    n = max(1, min(len(pending), workers * CHUNKS_PER_WORKER))
    size = -(-len(pending) // n)
    return [pending[i : i + size] for i in range(0, len(pending), size)]


class WorkerStats:
    """Episodes and busy seconds of each worker, for the run summary."""

    def __init__(self):
        self.episodes, self.seconds = defaultdict(int), defaultdict(float)

    def add(self, worker: str, episodes: int, seconds: float) -> None:
        self.episodes[worker] += episodes
        self.seconds[worker] += seconds

    def summary(self) -> str:
        parts = [
            f"{w} {self.episodes[w]} episodes at {self.episodes[w] / max(self.seconds[w], 1e-9):.1f} ep/s"
            for w in sorted(self.episodes)
        ]
        return f"ray: {len(parts)} worker(s) answered: " + "; ".join(parts)


def ray_answers(
    ray, answer, method_ref, blind_ref, pending: list[int], workers: int, seed: int, label: str, stats: WorkerStats
):
    """Yields what answer(method, blind view, chunk, seed, label) yields for `pending`, chunk by chunk in episode
    order, as workers finish them."""
    chunks = chunks_of(pending, workers)
    call = remote_call(ray)
    refs = [call.remote(answer, [method_ref, blind_ref], chunk, seed, label) for chunk in chunks]
    yield from in_order(ray, refs, chunks, label, stats)


def in_order(ray, refs: list, chunks: list[list[int]], label: str, stats: WorkerStats):
    """The items each ref's chunk returns, chunk by chunk in submission order, as workers finish them; a
    method's exception fails the method (MethodFailed, or the UserError it raised), as on the local executor."""
    from benchmark.scoring import MethodFailed

    position = {ref: n for n, ref in enumerate(refs)}
    done, next_out, waiting = {}, 0, list(refs)
    try:
        while next_out < len(refs):
            ready, waiting = ray.wait(waiting, num_returns=1)
            for ref in ready:
                try:
                    answered, worker, busy = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, UserError):
                        raise cause from None
                    raise MethodFailed(
                        label,
                        "a Ray worker",
                        f" (episodes {chunks[position[ref]][0]}-{chunks[position[ref]][-1]})",
                        cause or exc,
                    ) from None
                except ray.exceptions.WorkerCrashedError as exc:
                    raise MethodFailed(label, "a Ray worker", f": its process died {RETRIES + 1} times", exc) from None
                stats.add(worker, len(chunks[position[ref]]), busy)
                done[position[ref]] = answered
            while next_out in done:
                yield from done.pop(next_out)
                next_out += 1
    finally:
        for ref in waiting:
            ray.cancel(ref, force=True)


def put_prepared(ray, method, label: str):
    """The prepared method in Ray's object store; a method whose state cannot be sent is a one-line error."""
    try:
        return ray.put(method)
    except Exception as exc:  # pickling fails in many ways (locks, open files, lambdas)
        raise UserError(
            f"method {label}: its prepared state cannot be sent to Ray workers ({type(exc).__name__}: "
            f"{exc}); run it with --executor local"
        ) from None


class RayExecutor:
    """What benchmark.runner.episode_results (the episode protocol, benchmark/protocols/episodes.py) and
    benchmark.fixedk.run_fixed_k (the fixed-K protocol) ask instead of answering themselves: the same answers, in
    the same order, from Ray workers. The prepared method and each query-blind episode view go to the object
    store once; the caller scores."""

    def __init__(self, address: str | None, log=print, answer=None, timeout: float = CONNECT_TIMEOUT):
        """`answer`: benchmark.runner.episode_answers (what each worker runs on its chunk of episodes);
        `timeout`: seconds `address` may take to answer (start_ray)."""
        self.ray, self.workers = start_ray(address, log, timeout)
        self.answer = answer
        self.stats = WorkerStats()
        self._method = (None, None)  # (method, its object-store reference)
        self._episodes: dict[int, tuple] = {}

    def answers(self, method, blind, pending, seed, label):
        """self.answer(method, blind, pending, seed, label)'s answers, computed on the workers. `blind`: a
        tasks.episodes.BlindEpisodes, all of the episodes that a worker receives."""
        if not isinstance(blind, BlindEpisodes):  # an EpisodeSet here would hand workers the query labels
            raise TypeError(f"Ray workers take a BlindEpisodes view, not a {type(blind).__name__}")
        if self._method[0] is not method:
            self._method = (method, put_prepared(self.ray, method, label))
            self._episodes.clear()
        if id(blind) not in self._episodes:
            self._episodes[id(blind)] = (blind, self.ray.put(blind))
        yield from ray_answers(
            self.ray,
            self.answer,
            self._method[1],
            self._episodes[id(blind)][1],
            list(pending),
            self.workers,
            seed,
            label,
            self.stats,
        )

    def seed_answers(self, answer, method, k, seeds, sets, n_classes, label):
        """answer(method, k, seeds, sets, n_classes) (benchmark.fixedk.fixed_k_answers) in chunks of seeds on
        the workers, in seed order. `sets`: tasks.protocols.BlindFixedKSet (no test labels)."""
        if not all(isinstance(s, BlindFixedKSet) for s in sets):
            raise TypeError("Ray workers take BlindFixedKSet draws (no test labels)")
        method_ref = put_prepared(self.ray, method, label)
        chunks = chunks_of(list(range(len(seeds))), self.workers)
        call = remote_call(self.ray)
        refs = [
            call.remote(answer, [method_ref], k, [seeds[i] for i in c], [sets[i] for i in c], n_classes) for c in chunks
        ]
        return list(in_order(self.ray, refs, [[seeds[i] for i in c] for c in chunks], label, self.stats))

    def summary(self) -> str:
        return self.stats.summary()
