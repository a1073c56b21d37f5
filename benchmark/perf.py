"""`bench perf`: throughput, warm start and memory, all figures from one run, ratios side by side.

- Episode throughput on cached features (the harness's path: vectorised where the method allows) against
  easyfsl 1.5's PrototypicalNetworks with its episodic evaluation loop, on the same features and episodes.
- Each transductive method against easyfsl 1.5's implementation of it (`EASYFSL`), on the same features and
  episodes: episodes per second and the paired difference in accuracy.
- Feature extraction (decode, resize, batch, forward) against the raw forward pass on decoded tensors.
- Warm start: a `bench run` subprocess to its first finished episode, caches warm.
- Peak resident memory of a `bench run` subprocess on the task.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmark.perf_options import PerfOptions
from benchmark.runner import episode_answers, episode_results
from common.errors import UserError
from common.settings import Settings
from methods.backbones import backbone_cli_args, create_backbone, normalize
from methods.base import Context, handed
from methods.cache import Cache
from methods.devices import CPU
from methods.features import decode_images, feature_extractor, run_model, thread_policy, torch_threads
from methods.registry import create_method
from tasks.handles import RowHandles
from tasks.registry import Task, load_task


@dataclass
class Figure:
    what: str
    value: float
    unit: str
    reference: str = ""
    ratio: float | None = None
    note: str = ""


def harness_throughput(method, episodes, class_names) -> tuple[float, np.ndarray]:
    """(episodes per second, per-episode accuracies) through the harness's own episode path, from cached
    features and the episode set to each episode's scored result (accuracy, macro-F1, per-class accuracy)."""
    started = time.perf_counter()
    results = list(episode_results(method, episodes, list(range(len(episodes))), 0, class_names))
    seconds = time.perf_counter() - started
    return len(episodes) / seconds, np.array([r["accuracy"] for _, r, _ in results])


def _easyfsl():
    try:
        from easyfsl.datasets import FeaturesDataset
        from easyfsl.methods import PrototypicalNetworks
        from easyfsl.samplers import TaskSampler
        from easyfsl.utils import evaluate, evaluate_on_one_task
    except ImportError:
        raise UserError(
            "easyfsl is not installed; `.venv/bin/pip install -e '.[perf]'` adds it (bench perf only)"
        ) from None
    return FeaturesDataset, PrototypicalNetworks, TaskSampler, evaluate, evaluate_on_one_task


def easyfsl_throughput(
    features: torch.Tensor, labels: np.ndarray, episodes, threads: int | None = None
) -> tuple[float, np.ndarray]:
    """easyfsl 1.5 as its documentation evaluates on cached features: a FeaturesDataset, a DataLoader whose
    batch sampler is a TaskSampler (here one that yields *our* episodes, class by class, support then query,
    as easyfsl's own sampler lays them out) with its episodic_collate_fn, and `evaluate` over
    PrototypicalNetworks with an identity backbone, on `threads` intra-op threads (None: as set). Returns
    (episodes per second, per-episode accuracies)."""
    from torch.utils.data import DataLoader

    FeaturesDataset, PrototypicalNetworks, TaskSampler, evaluate, evaluate_on_one_task = _easyfsl()

    class SameEpisodes(TaskSampler):
        def __init__(self, episodes):  # TaskSampler's own __init__ would index the dataset for random draws
            self.n_way, self.n_shot, self.n_query, self.n_tasks = (
                episodes.n_way,
                episodes.n_shot,
                episodes.n_query,
                len(episodes),
            )
            self.episodes = episodes

        def __iter__(self):
            for e in self.episodes:
                yield [
                    int(i)
                    for c in range(e.n_way)
                    for i in (*e.support_idx[e.support_y == c], *e.query_idx[e.query_y == c])
                ]

    dataset = FeaturesDataset([int(x) for x in labels], features, [str(c) for c in np.unique(labels)])
    sampler = SameEpisodes(episodes)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=sampler.episodic_collate_fn)
    model = PrototypicalNetworks(torch.nn.Identity())
    with torch_threads(threads):
        started = time.perf_counter()
        evaluate(model, loader, device="cpu", use_tqdm=False)
        seconds = time.perf_counter() - started
    with torch.no_grad():  # per-episode accuracies for the check (not timed)
        acc = np.array(
            [correct / total for correct, total in (evaluate_on_one_task(model, *task[:4]) for task in loader)]
        )
    return len(episodes) / seconds, acc


# Our transductive methods beside easyfsl 1.5's: the class, and its options set to our defaults where easyfsl has
# them (feature preprocessing included: `base_mean` stands for the base pool's mean feature). What easyfsl does
# otherwise is docs/transductive-methods.md's account of the differences.
EASYFSL = {
    "bd-cspn": ("BDCSPN", {"feature_normalization": 2}),
    "laplacianshot": (
        "LaplacianShot",
        {
            "feature_centering": "base_mean",
            "feature_normalization": 2,
            "knn": 3,
            "lambda_regularization": 0.7,
            "inference_steps": 20,
        },
    ),
    "tim": (
        "TIM",
        {
            "feature_normalization": 2,
            "fine_tuning_steps": 1000,
            "fine_tuning_lr": 1e-4,
            "cross_entropy_weight": 0.1,
            "marginal_entropy_weight": 1.0,
            "conditional_entropy_weight": 0.1,
            "temperature": 15.0,
        },
    ),
    # L2 before its power transform: easyfsl has no normalisation after it, and raw features' squared distances
    # (hundreds) underflow exp(-10 d) to 0, leaving it at chance
    "pt-map": (
        "PTMAP",
        {
            "feature_normalization": 2,
            "fine_tuning_steps": 20,
            "fine_tuning_lr": 0.2,
            "lambda_regularization": 10.0,
            "power_factor": 0.5,
        },
    ),
}


def easyfsl_transductive(
    name: str, features: torch.Tensor, base_mean: torch.Tensor, episodes, threads: int | None = None
) -> tuple[float, np.ndarray]:
    """(episodes per second, per-episode accuracies) of easyfsl's implementation of `name` (EASYFSL), one
    episode at a time as easyfsl evaluates: process_support_set, then the query's forward pass."""
    _easyfsl()
    import easyfsl.methods

    cls, options = EASYFSL[name]
    options = {k: base_mean if v == "base_mean" else v for k, v in options.items()}
    model = getattr(easyfsl.methods, cls)(**options).eval()
    accuracies = []
    with torch_threads(threads), torch.no_grad():
        started = time.perf_counter()
        for e in episodes:
            model.process_support_set(features[e.support_idx], torch.from_numpy(e.support_y))
            predicted = model(features[e.query_idx]).argmax(-1).numpy()
            accuracies.append(float((predicted == e.query_y).mean()))
        seconds = time.perf_counter() - started
    return len(episodes) / seconds, np.array(accuracies)


def transductive_figures(task: Task, ctx: Context, features: torch.Tensor, eps) -> list[Figure]:
    """Per transductive method: our episodes/s (the harness's batched path) against easyfsl's, and the paired
    difference in accuracy, ours - easyfsl's, on the same episodes."""
    from benchmark.stats import paired_difference

    base_idx, _ = ctx.base_pool()
    base_mean = features[torch.as_tensor(base_idx)].mean(0)
    figures = []
    for name, (cls, _) in EASYFSL.items():
        method = create_method(name)
        method.prepare(ctx.fresh())
        rate, ours = harness_throughput(method, eps, task.class_names)
        # one thread: its tensors are small, and more threads only contend (measured: 20x slower on a busy machine)
        easy_rate, theirs = easyfsl_transductive(name, features, base_mean, eps, 1)
        d, half, n = paired_difference(ours, theirs)
        figures.append(
            Figure(
                f"episodes/s, {name} (transductive)",
                rate,
                "ep/s",
                f"easyfsl {cls} {easy_rate:,.1f} ep/s",
                rate / easy_rate,
                f"accuracy ours - easyfsl {100 * d:+.2f} ± {100 * half:.2f} pts ({n} pairs)",
            )
        )
    return figures


def extraction_throughput(
    paths, image_size: int, backbone: str, batch_size: int = 64, repeats: int = 2, device: torch.device = CPU
) -> tuple[float, float, str]:
    """(suite images/s, raw forward images/s, how the raw figure ran) for the same images, best of `repeats`.

    Suite: what `bench run` does for an uncached table: decode + resize from the files (threads), then
    run_model under the thread policy (N workers, one intra-op thread each). Raw: the forward pass alone on
    already decoded and normalised tensors, the faster of the same worker layout and torch's own threading
    (one process, all cores), so that the reference is the backbone's limit on this machine, not our layout."""
    from concurrent.futures import ThreadPoolExecutor

    model = feature_extractor(backbone).eval().to(device)
    workers = os.cpu_count() or 1
    images = decode_images(paths, image_size)
    batches = [
        normalize(torch.from_numpy(images[i : i + batch_size]).to(device)) for i in range(0, len(images), batch_size)
    ]

    def forward(x):
        with torch.inference_mode():
            return model(x)

    suite, pooled, native = [], [], []
    with thread_policy(workers):
        run_model(model, images[:batch_size], batch_size=batch_size, device=device)  # warm-up: kernels are built
        for _ in range(repeats):
            started = time.perf_counter()
            run_model(model, decode_images(paths, image_size), batch_size=batch_size, device=device)
            suite.append(len(paths) / (time.perf_counter() - started))
            with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
                started = time.perf_counter()
                list(pool.map(forward, batches))
                pooled.append(len(paths) / (time.perf_counter() - started))
    with torch.inference_mode():
        model(batches[0])  # warm-up under torch's own threading
        for _ in range(repeats):
            started = time.perf_counter()
            for x in batches:
                model(x)
            native.append(len(paths) / (time.perf_counter() - started))
    if max(pooled) >= max(native):
        return max(suite), max(pooled), f"{workers} workers x 1 thread"
    return max(suite), max(native), f"torch's {torch.get_num_threads()} threads"


def step1_rates(
    part: np.ndarray, labels: np.ndarray, opts: dict, backbone: str, device: torch.device, cores: int, repeats: int
) -> tuple[float, float]:
    """(step 1's img/s, the bare loop's img/s) on `cores`: step 1 under `bench run --threads cores`'s policy
    (that many workers, one intra-op thread each), the bare loop on torch's own threading over that many
    threads. Best of `repeats`, interleaved, after an untimed run of each (oneDNN builds its kernels)."""
    from threadpoolctl import threadpool_limits

    from methods.sdft import train_step1

    groups = np.full(len(part), "one scene", dtype=object)
    batch_size = opts["batch_size"]

    def suite(images=part):
        model = _fresh_classifier(backbone, device)
        with thread_policy(cores):
            started = time.perf_counter()
            train_step1(
                model, images, labels[: len(images)], groups[: len(images)], opts, 0, lambda m: None, device=device
            )
            return len(images) / (time.perf_counter() - started)

    def bare(images=part):
        model = _fresh_classifier(backbone, device).train()
        with threadpool_limits(limits=cores), torch_threads(cores):
            return _bare_training_rate(model, images, labels[: len(images)], batch_size, opts, device)

    suite(part[: 2 * batch_size]), bare(part[: 2 * batch_size])  # warm-up
    ours, raw = _interleaved(suite, bare, repeats)
    return max(ours), max(raw)


def step1_figures(
    images: np.ndarray,
    backbone: str,
    batch_size: int = 32,
    batches: int = 4,
    repeats: int = 2,
    device: torch.device = CPU,
) -> list[Figure]:
    """SDFT step 1's training throughput (methods/sdft.train_step1 on `batches` batches: augmentation,
    micro-batches side by side, AdamW, schedule) against a bare forward + backward + AdamW loop of the same
    backbone, batch size, image size and batches: on all cores (the bare loop on torch's own threading, what
    a plain training script gets from this machine), and on one thread each. The slice has one scene, so step 1
    holds nothing out and runs its batches only."""
    from methods.parallel import available_cores
    from methods.sdft import STEP1_DEFAULTS

    n = batch_size * batches
    part = np.ascontiguousarray(images[:n])
    if len(part) < 2 * batch_size:
        raise UserError(f"bench perf: step 1's throughput needs {2 * batch_size} images, the task has {len(part)}")
    labels = (np.arange(len(part)) % 10).astype(np.int64)
    opts = {**STEP1_DEFAULTS, "epochs": 1, "batch_size": batch_size}
    size, cores = images.shape[-1], available_cores()
    what = (
        f"SDFT step 1 training, {backbone} {size}px, batches of {batch_size} (micro-batches of {opts['micro_batch']})"
    )
    figures = []
    for threads in sorted({cores, 1}, reverse=True):
        ours, raw = step1_rates(part, labels, opts, backbone, device, threads, repeats)
        if threads == cores:
            figures.append(
                Figure(
                    f"{what}, {cores} workers x 1 thread",
                    ours,
                    "img/s",
                    f"bare forward+backward+AdamW, torch's {cores} threads, {raw:,.1f} img/s",
                    ours / raw,
                    f"{len(part)} images, all cores on both sides; the same bits on any core count; target >= 0.9x",
                )
            )
        else:
            figures.append(
                Figure(
                    f"{what}, one thread",
                    ours,
                    "img/s",
                    f"bare forward+backward+AdamW, one thread, {raw:,.1f} img/s",
                    ours / raw,
                    f"{len(part)} images, `bench run --threads 1` against a one-thread loop",
                )
            )
    return figures


def _fresh_classifier(backbone: str, device: torch.device):
    """The pretrained backbone with a new 10-class head, as step 1 trains it."""
    model = create_backbone(backbone, pretrained=True)
    model.reset_classifier(10)
    return model.to(device)


def _bare_training_rate(model, part: np.ndarray, labels: np.ndarray, batch_size: int, opts: dict, device) -> float:
    """Images per second of a bare forward + backward + AdamW pass over `part` (step 1's learning rate and weight
    decay; no augmentation, no schedule)."""
    from torch.nn import functional as F

    opt = torch.optim.AdamW(model.parameters(), lr=opts["lr"], weight_decay=opts["weight_decay"])
    y = torch.from_numpy(labels).to(device)
    started = time.perf_counter()
    for start in range(0, len(part), batch_size):
        x = normalize(torch.from_numpy(part[start : start + batch_size]).to(device))
        loss = F.cross_entropy(model(x), y[start : start + batch_size])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return len(part) / (time.perf_counter() - started)


def _interleaved(first, second, repeats: int) -> tuple[list, list]:
    """`repeats` results of each of two timings, run in turns with the order swapped every round (neither side
    always runs on a machine the other has just warmed)."""
    a, b = [], []
    for r in range(repeats):
        for side in (first, second) if r % 2 == 0 else (second, first):
            (a if side is first else b).append(side())
    return a, b


def ray_figure(
    task: Task,
    ctx: Context,
    method_name: str,
    episodes: int,
    workers: int = 2,
    shape: tuple[int, int, int] = (5, 5, 15),
) -> Figure:
    """Episodes/s of the Ray executor with `workers` local worker processes against the local executor on the
    same prepared method and 5-way 5-shot episodes (Ray's start-up not counted; putting the prepared method in
    the object store is), and whether their rows are the same."""
    from benchmark.executors import RayExecutor, import_ray

    ray = import_ray()
    method = create_method(method_name)
    method.prepare(ctx)
    eps = task.episodes(*shape, episodes, seed=0)
    pending = list(range(len(eps)))
    with thread_policy(os.cpu_count() or 1):  # the local executor as `bench run` runs it
        episode_results(method, eps, pending[:1], 0, task.class_names)  # warm-up
        started = time.perf_counter()
        local = list(episode_results(method, eps, pending, 0, task.class_names))
        local_rate = len(pending) / (time.perf_counter() - started)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address="local", num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        executor = RayExecutor(None, log=lambda m: None, answer=episode_answers)
        list(episode_results(method, eps, pending[:workers], 0, task.class_names, method_name, executor))  # warm
        started = time.perf_counter()
        spread = list(episode_results(method, eps, pending, 0, task.class_names, method_name, executor))
        ray_rate = len(pending) / (time.perf_counter() - started)
    finally:
        if started_here:
            ray.shutdown()
    same = [(i, r["accuracy"], r["macro_f1"]) for i, r, _ in local] == [
        (i, r["accuracy"], r["macro_f1"]) for i, r, _ in spread
    ]
    return Figure(
        f"episodes/s, {method_name} {shape[1]}-shot, Ray executor ({executor.workers} local workers)",
        ray_rate,
        "ep/s",
        f"local executor {local_rate:,.2f} ep/s",
        ray_rate / local_rate,
        f"{len(pending)} episodes; {'the same rows' if same else 'ROWS DIFFER'}; target >= 0.8x",
    )


def ray_missing() -> str | None:
    """Why the Ray row cannot be measured here (Ray is not installed: the `[ray]` extra), or None."""
    from benchmark.executors import import_ray

    try:
        import_ray()
    except UserError as exc:
        return str(exc)
    return None


def sdft_step1_cached(ctx: Context) -> bool:
    """Whether SDFT's step-1 checkpoint for this context is in the cache (else it costs a whole step 1)."""
    from methods.sdft import SDFT

    return ctx.cache.cached_state_dict("sdft-step1", SDFT().step1_key(ctx)) is not None


# Run in the child: the CLI, with a note on stderr of when the first episode finished (wall clock) and of the
# child's peak resident memory (VmHWM) at the end.
_CHILD = """
import resource, sys, time
import benchmark.runner as runner
from benchmark.cli import main
episode_results = runner.episode_results
def noted(*args, **kwargs):
    first = True
    for item in episode_results(*args, **kwargs):
        if first:
            print("FIRST_EPISODE_AT", time.time(), file=sys.stderr, flush=True)
            first = False
        yield item
runner.episode_results = noted
rc = main(sys.argv[1:])
try:  # this process's own peak: ru_maxrss also counts the parent's peak, which vfork + exec hand down
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("PEAK_RSS_KB", peak, file=sys.stderr)
sys.exit(rc)
"""


def bench_subprocess(args: list[str], env: dict) -> tuple[float, float, int]:
    """(wall seconds, seconds to the first finished episode (nan if none ran), peak RSS in bytes) of
    `bench ARGS` in a child process."""
    started, started_wall = time.perf_counter(), time.time()
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise UserError(f"bench {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    notes = dict(
        line.split()[:2] for line in proc.stderr.splitlines() if line.startswith(("PEAK_RSS_KB", "FIRST_EPISODE_AT"))
    )
    first = float(notes["FIRST_EPISODE_AT"]) - started_wall if "FIRST_EPISODE_AT" in notes else float("nan")
    return seconds, first, int(notes.get("PEAK_RSS_KB", 0)) * 1024


# Run in the child of the cold-job row: the CLI, with a line on stderr for every progress bar (when it opened and
# closed, wall clock and the process's CPU time over all its threads, and its description), whether or not bars
# are drawn (--quiet), and at its end the whole process's CPU time and peak resident memory (Linux's VmHWM).
_COLD_CHILD = """
import sys, time
from contextlib import contextmanager
import benchmark.console as console
from benchmark.cli import main
opened = console.RichProgressReporter.bar
@contextmanager
def timed(self, description, total):
    started, cpu = time.time(), time.process_time()
    try:
        with opened(self, description, total) as advance:
            yield advance
    finally:
        print("BAR", started, time.time(), cpu, time.process_time(), " ".join(str(description).split()), sep="\\t",
              file=sys.stderr, flush=True)
console.RichProgressReporter.bar = timed
rc = main(sys.argv[1:])
print("CPU", time.process_time(), sep="\\t", file=sys.stderr, flush=True)
peak = next((line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")), "0")
print("PEAK_RSS_KB", peak, sep="\\t", file=sys.stderr, flush=True)
sys.exit(rc)
"""

# What each of the cold job's progress bars is part of, by its description (the first that matches)
PHASES = (
    ("decode", re.compile(r"^decoding ")),
    ("step 1", re.compile(r"^sdft step 1")),
    ("features", re.compile(r"features|activations")),
    ("episodes", re.compile(r" \d+-shot$")),
)


def phase_seconds(stderr: str) -> dict[str, tuple[float, float]]:
    """(wall seconds, CPU seconds over all threads) per phase (PHASES) from the cold child's BAR lines, and
    "other" for the rest of the process (its CPU line; wall time is the caller's to fill in)."""
    out = {name: (0.0, 0.0) for name, _ in PHASES}
    total_cpu = 0.0
    for line in stderr.splitlines():
        if line.startswith("CPU\t"):
            total_cpu = float(line.split("\t")[1])
        if line.startswith("BAR\t"):
            _, started, ended, cpu_started, cpu_ended, description = line.split("\t", 5)
            name = next((name for name, pattern in PHASES if pattern.search(description)), None)
            if name is not None:
                wall, cpu = out[name]
                out[name] = (wall + float(ended) - float(started), cpu + float(cpu_ended) - float(cpu_started))
    out["other"] = (0.0, max(0.0, total_cpu - sum(cpu for _, cpu in out.values())))
    return out


def cold_job(
    task_name: str,
    data_dir: Path,
    work_dir: Path,
    episodes: int,
    log=print,
    methods: tuple[str, ...] = ("sdft", "protonet"),
    shots: str = "5",
) -> list[Figure]:
    """The main job on a fresh clone: `bench run --method sdft --method protonet --shots 5` with an empty cache
    (a new folder: no decoded images, digests, checkpoint or features), its wall time to the last row and
    where it went (decode, step 1, features and activations, episodes; the rest is imports, content digests,
    writing rows), with the machine's load before and after."""
    from methods.parallel import available_cores
    from methods.sdft import machine_load

    env = {**os.environ, "BENCH_DATA_DIR": str(data_dir), "BENCH_CACHE_DIR": str(work_dir / "cache")}
    args = [
        "run",
        "--task",
        task_name,
        "--quiet",
        *(a for m in methods for a in ("--method", m)),
        "--shots",
        shots,
        "--episodes",
        str(episodes),
        "--out",
        str(work_dir / "cold.csv"),
    ]
    load_before = machine_load()
    log(f"the cold main job: bench {' '.join(args[:-2])} with an empty cache (load average {load_before}) ...")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _COLD_CHILD, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    (work_dir / "cold.log").write_text(proc.stderr)  # its status lines (step 1's epochs) and the BAR lines
    if proc.returncode != 0:
        raise UserError(f"bench {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    load_after = machine_load()
    phases = phase_seconds(proc.stderr)
    phases["other"] = (seconds - sum(wall for wall, _ in phases.values()), phases["other"][1])
    cpu = sum(c for _, c in phases.values())
    loads = f"load average {load_before:.1f} before, {load_after:.1f} after" if load_before is not None else ""
    peak = next((int(line.split("\t")[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB\t")), 0)
    figures = [
        Figure(
            f"cold main job: bench run {' '.join(args[3:-2])}, empty cache, to its last row",
            seconds,
            "s",
            f"CPU time {cpu:,.0f} s",
            None,
            f"{available_cores()} cores; {loads}; peak memory {peak / 1e6:.2f} GB; target <= 480 s",
        )
    ]
    for name, (wall, cpu) in phases.items():
        figures.append(
            Figure(f"  {name}", wall, "s", f"CPU time {cpu:,.0f} s", None, f"{wall / seconds:.0%} of the job")
        )
    return figures


def episode_figures(task: Task, ctx: Context, features: torch.Tensor, eps, warm_eps, repeats: int = 3) -> list[Figure]:
    """Each side runs `repeats` times, interleaved (easyfsl, then ours, again), and keeps its best rate: on a
    shared machine the best of a few runs is the least disturbed one, for both sides alike. Every timed run
    directly follows an untimed one of the same side on the first episodes (`warm_eps`), so that each is timed
    in the steady state of a run, and the order of the sides reverses from round to round: measured, whichever
    of protonet and simpleshot (the same code) ran straight after easyfsl's loop was 15-30% slower, also after
    an untimed warm-up, which no `bench run` would see. Ours runs as `bench run` does (thread_policy: worker
    threads on whole chunks); easyfsl's loop runs both on one thread and on torch's threads over all cores,
    and keeps the faster."""
    methods = {}
    for name in ("protonet", "simpleshot", "linear-probe"):
        methods[name] = create_method(name)
        methods[name].prepare(ctx.fresh())  # each method its own sealed view
    easy_rates, rates, accuracies = [], {name: [] for name in methods}, {}
    sides = ["easyfsl", *methods]
    for r in range(repeats):
        for side in sides if r % 2 == 0 else sides[::-1]:  # who follows whom changes from round to round
            if side == "easyfsl":  # on one thread and on all cores: it keeps the faster
                for threads in (1, os.cpu_count() or 1):
                    easyfsl_throughput(features, task.table.labels, warm_eps, threads)
                    rate, easy_acc = easyfsl_throughput(features, task.table.labels, eps, threads)
                    easy_rates.append((rate, threads))
            else:
                harness_throughput(methods[side], warm_eps, task.class_names)
                rate, accuracies[side] = harness_throughput(methods[side], eps, task.class_names)
                rates[side].append(rate)
    easy_rate, easy_threads = max(easy_rates)
    figures = []
    for name in methods:
        same = ""
        if name == "protonet":  # the same maths as easyfsl's PrototypicalNetworks
            acc = accuracies[name]
            same = (
                f"same accuracy as easyfsl in all {len(acc)} episodes"
                if np.array_equal(acc, easy_acc)
                else f"accuracies differ from easyfsl in {(acc != easy_acc).sum()} of {len(acc)} episodes"
            )
        against = f"easyfsl ProtoNet {easy_rate:,.0f} ep/s ({easy_threads} thread{'s' * (easy_threads > 1)})"
        figures.append(
            Figure(
                f"episodes/s, {name}",
                max(rates[name]),
                "ep/s",
                against,
                max(rates[name]) / easy_rate,
                same + ("; target >= 10x" if name == "protonet" else ""),
            )
        )
    return figures


def run_perf(settings: Settings, options: PerfOptions, work_dir: Path, log=print) -> list[Figure]:
    """Every figure of `bench perf` on `settings`' task, backbone, image size and device (its data and cache
    folders), in a session of those settings."""
    from benchmark.session import session
    from methods.devices import resolve_device

    device = resolve_device(settings.device)
    with session(settings, thread_policy=False):
        cache = Cache(settings.cache_dir)
        task = load_task(settings.task, settings.data_dir)
        # rows addressed by row number (the episode sets here are in rows); the built-ins' own cache folder
        given = handed(
            task,
            cache,
            settings.backbone,
            settings.image_size,
            "both",
            device=device,
            handles=RowHandles.identity(len(task.table)),
        )
        ctx = Context.of(
            given,
            cache.folder("methods", "methods"),
            backbone=settings.backbone,
            image_size=settings.image_size,
            device=device,
        )
        figures = in_process_figures(task, ctx, options, log)
        figures += isolated_figures(task, ctx, cache, options, log)
        figures += child_figures(settings, options, work_dir, device, log)
    return figures


def in_process_figures(task: Task, ctx: Context, options: PerfOptions, log) -> list[Figure]:
    """Episode throughput (and the transductive methods) against easyfsl, extraction, SDFT step 1."""
    log("features (cached after the first run) ...")
    features = torch.from_numpy(ctx.features())
    episodes = options.episodes
    eps = task.episodes(5, 5, 15, episodes, seed=0)
    log(f"episode throughput over {episodes} episodes ...")
    with thread_policy(os.cpu_count() or 1):  # both sides under the threading that `bench run` uses
        figures = episode_figures(task, ctx, features, eps, task.episodes(5, 5, 15, min(episodes, 50), seed=0))
        if options.transductive_episodes:
            log(f"transductive methods against easyfsl's, {options.transductive_episodes} episodes ...")
            figures += transductive_figures(
                task, ctx, features, task.episodes(5, 5, 15, options.transductive_episodes, seed=0)
            )

    log(f"feature extraction of {options.extraction_images} images ...")
    backbone, image_size = ctx.backbone, ctx.image_size
    suite, raw, how = extraction_throughput(
        list(task.table.paths[: options.extraction_images]), image_size, backbone, device=ctx.device
    )
    figures.append(
        Figure(
            f"extraction from files, {backbone} {image_size}px",
            suite,
            "img/s",
            f"raw forward {raw:,.0f} img/s ({how})",
            suite / raw,
            "target >= 0.8x",
        )
    )

    log(f"SDFT step 1 training throughput on {options.step1_batches} batches, all cores and one thread ...")
    figures.extend(step1_figures(ctx.images(), backbone, batches=options.step1_batches, device=ctx.device))
    return figures


def isolated_figures(task: Task, ctx: Context, cache: Cache, options: PerfOptions, log) -> list[Figure]:
    """The Ray executor against the local one (unless options.ray_method is "none"), and --isolate's cost."""
    figures = []
    ray_method = options.ray_method
    if ray_method is None:  # SDFT itself where its step 1 is cached; else its step 2 on the ImageNet backbone
        ray_method = "sdft" if sdft_step1_cached(ctx) else "sdft-no-step1"
    if ray_method != "none":
        log(f"Ray executor against the local executor, {ray_method}, {options.ray_episodes} episodes ...")
        figure = ray_figure(task, ctx, ray_method, options.ray_episodes)
        if ray_method == "sdft-no-step1":
            figure.note += " (sdft's step-1 checkpoint is not cached: its step 2 without step 1 instead)"
        figures.append(figure)

    if shutil.which("bwrap"):
        for name in ("protonet", ray_method if ray_method != "none" else "sdft-no-step1"):
            log(f"--isolate against the local executor, {name}, {options.sandbox_episodes} episodes ...")
            figures += sandbox_figures(
                task, cache, name, options.sandbox_episodes, ctx.backbone, ctx.image_size, ctx.device
            )
    else:
        log("no --isolate rows: bubblewrap (bwrap) is not installed")
    return figures


def child_figures(settings: Settings, options: PerfOptions, work_dir: Path, device: torch.device, log) -> list[Figure]:
    """Warm start and peak memory of `bench run` child processes on the same settings."""
    env = {**os.environ, "BENCH_DATA_DIR": str(settings.data_dir), "BENCH_CACHE_DIR": str(settings.cache_dir)}
    common = [
        "run",
        "--task",
        settings.task,
        "--quiet",
        *backbone_cli_args(settings.backbone),
        "--image-size",
        str(settings.image_size),
        "--device",
        str(device),
    ]
    warm_method = options.warm_method
    warm = common + ["--method", warm_method, "--shots", "5", "--episodes", "1"]
    log(f"warm start of `bench run --method {warm_method} --shots 5` ...")
    bench_subprocess(warm + ["--out", str(work_dir / "warmup.csv")], env)  # makes sure the caches are warm
    seconds, first, warm_peak = bench_subprocess(warm + ["--out", str(work_dir / "warm.csv")], env)
    figures = [
        Figure(
            f"warm start, bench run --method {warm_method} --shots 5, to its first finished episode",
            first,
            "s",
            "",
            None,
            f"caches warm; the whole process (table printed, exited) took "
            f"{seconds:.1f} s and held at most {warm_peak / 1e9:.2f} GB; target < 10 s",
        )
    ]

    from methods.registry import builtin_method_names

    memory_methods = options.memory_methods or tuple(builtin_method_names())
    shots, episodes = options.memory_shots, options.memory_episodes
    methods = [a for m in memory_methods for a in ("--method", m)]
    log(
        f"peak memory of a {settings.task} run ({', '.join(memory_methods)}, shots {shots}, "
        f"{episodes} episode(s) each) ..."
    )
    seconds, _, peak = bench_subprocess(
        common + methods + ["--shots", shots, "--episodes", str(episodes), "--out", str(work_dir / "memory.csv")], env
    )
    figures.append(
        Figure(
            f"peak memory, bench run of {', '.join(memory_methods)} --shots {shots} --episodes {episodes}",
            peak / 1e9,
            "GB",
            "",
            None,
            f"VmHWM of the child ({peak / 2**30:.2f} GiB); it ran {seconds:.0f} s; target < 4 GB",
        )
    )
    return figures


def sandbox_figures(
    task: Task,
    cache: Cache,
    method_name: str,
    episodes: int,
    backbone: str,
    image_size: int,
    device: torch.device = CPU,
    shape: tuple[int, int, int] = (5, 5, 15),
) -> list[Figure]:
    """What `--isolate` costs for one method: its start-up (describe, prepare in the sandbox, a second process
    prepared from the cache) against preparing it here, and its episodes per second (a fresh fork per episode)
    against the local executor on the same episodes; and whether their answers agree."""
    from benchmark.answer_checks import same_answers
    from benchmark.runner import method_context

    handles = RowHandles.of_table(task.table)
    blind = task.episodes(*shape, episodes, seed=0).blind(handles)
    pending = list(range(episodes))
    method = create_method(method_name)
    started = time.perf_counter()
    method.prepare(method_context(task, method, cache, backbone, image_size, 0, device=device, handles=handles))
    local_start = time.perf_counter() - started
    with thread_policy(1):
        started = time.perf_counter()
        local = [a.scores for a in episode_answers(method, blind, pending, 0, method_name)]
        local_rate = episodes / (time.perf_counter() - started)
    start, isolated, seconds = _isolated_answers(
        task, cache, handles, method_name, (blind, pending), backbone, image_size, device
    )
    rate = episodes / seconds
    same = all(same_answers(a if a.ndim == 2 else a[0], b if b.ndim == 2 else b[0]) for a, b in zip(local, isolated))
    return [
        Figure(
            f"--isolate start-up, {method_name} (describe, prepare, serve)",
            start,
            "s",
            f"prepared here in {local_start:.1f} s",
            None,
            "bubblewrap sandbox; caches warm",
        ),
        Figure(
            f"episodes/s under --isolate, {method_name} {shape[1]}-shot (a fresh fork per episode)",
            rate,
            "ep/s",
            f"local executor {local_rate:,.2f} ep/s",
            rate / local_rate,
            f"{episodes} episodes; {'the same answers' if same else 'ANSWERS DIFFER'}",
        ),
    ]


def _isolated_answers(task: Task, cache: Cache, handles, method_name: str, episodes, backbone, image_size, device):
    """The method under --isolate, the cache and the home folder hidden: (seconds to describe and prepare it in
    the sandbox, its scores for `episodes` = (blind episodes, the pending ones), seconds those answers took)."""
    from benchmark.runner import Answered, method_cache
    from benchmark.sandbox import Placement, SandboxExecutor, describe_isolated

    blind, pending = episodes
    hidden = [cache.root, Path.home()]
    started = time.perf_counter()
    proxy = describe_isolated(
        method_name, {}, Placement(True, cache.folder("methods", "describe").root, tuple(hidden), str(device))
    )
    executor = SandboxExecutor(hidden, Answered)
    given = handed(task, cache, backbone, image_size, type(proxy).consumes, device=device, handles=handles)
    executor.prepare(proxy, given, method_cache(cache, proxy).root, backbone, image_size, 0, str(device))
    start = time.perf_counter() - started
    try:
        started = time.perf_counter()
        isolated = [a.scores for a in executor.answers(proxy, blind, pending, 0, method_name)]
        return start, isolated, time.perf_counter() - started
    finally:
        executor.close()
