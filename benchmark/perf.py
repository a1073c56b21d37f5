"""`bench perf`: throughput, warm start and memory, all figures from one run, ratios side by side.

- Episode throughput on cached features (the harness's path: vectorised where the method allows) against
  easyfsl 1.5's PrototypicalNetworks with its episodic evaluation loop, on the same features and episodes.
- Feature extraction (decode, resize, batch, forward) against the raw forward pass on decoded tensors.
- Warm start: a `bench run` subprocess to its first finished episode, caches warm.
- Peak resident memory of a `bench run` subprocess on the task.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmark.runner import episode_scores, score_episode
from methods.base import Context
from methods.cache import Cache
from methods.features import decode_images, feature_extractor, run_model, thread_policy
from methods.backbones import normalize
from methods.registry import create_method
from tasks.errors import UserError
from tasks.registry import load_task


@dataclass
class Figure:
    what: str
    value: float
    unit: str
    reference: str = ""
    ratio: float | None = None
    note: str = ""


def harness_throughput(method, episodes) -> tuple[float, np.ndarray]:
    """(episodes per second, per-episode accuracies) through the harness's own episode path."""
    started = time.perf_counter()
    scores = [(i, s) for i, s, _ in episode_scores(method, episodes, list(range(len(episodes))), seed=0)]
    seconds = time.perf_counter() - started
    class_names = [str(c) for c in range(int(episodes.classes.max()) + 1)]
    acc = np.array([score_episode(episodes.episode(i), s, class_names)["accuracy"] for i, s in scores])
    return len(episodes) / seconds, acc


def easyfsl_throughput(features: torch.Tensor, episodes) -> tuple[float, np.ndarray]:
    """easyfsl's PrototypicalNetworks (identity backbone over the same features) in its `evaluate` loop."""
    try:
        from easyfsl.methods import PrototypicalNetworks
        from easyfsl.utils import evaluate, evaluate_on_one_task
    except ImportError:
        raise UserError("easyfsl is not installed; `pip install -e '.[perf]'` adds it (benchmark only)") from None
    tasks = [(features[torch.as_tensor(e.support_idx)], torch.as_tensor(e.support_y),
              features[torch.as_tensor(e.query_idx)], torch.as_tensor(e.query_y), list(range(e.n_way)))
             for e in episodes]
    model = PrototypicalNetworks(torch.nn.Identity())
    started = time.perf_counter()
    evaluate(model, tasks, device="cpu", use_tqdm=False)  # its loop: process_support_set + forward per task
    seconds = time.perf_counter() - started
    with torch.no_grad():
        acc = np.array([evaluate_on_one_task(model, *t[:4])[0] / len(t[3]) for t in tasks])
    return len(tasks) / seconds, acc


def extraction_throughput(paths, image_size: int, backbone: str, batch_size: int = 64) -> tuple[float, float]:
    """(suite images/s from files, raw forward images/s on decoded tensors) for the same images."""
    model = feature_extractor(backbone).eval()
    with thread_policy(os.cpu_count() or 1):  # as `bench run` extracts
        started = time.perf_counter()
        images = decode_images(paths, image_size)
        run_model(model, images, batch_size=batch_size)
        suite = len(paths) / (time.perf_counter() - started)
    batches = [normalize(torch.from_numpy(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    with torch.inference_mode():  # torch's own threading: the backbone's limit on this machine
        model(batches[0])  # warm-up
        started = time.perf_counter()
        for x in batches:
            model(x)
    raw = len(paths) / (time.perf_counter() - started)
    return suite, raw


def bench_subprocess(args: list[str], env: dict) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of `bench ARGS` in a child process."""
    code = ("import resource, sys; from benchmark.cli import main; rc = main(sys.argv[1:]); "
            "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise UserError(f"bench {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    peak = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    return seconds, peak[0] * 1024 if peak else 0


def episode_figures(ctx: Context, features: torch.Tensor, eps) -> list[Figure]:
    easy_rate, easy_acc = easyfsl_throughput(features, eps)
    figures = []
    for name in ("protonet", "simpleshot", "linear-probe"):
        method = create_method(name)
        method.prepare(ctx)
        rate, acc = harness_throughput(method, eps)
        same = ""
        if name == "protonet":  # the same maths as easyfsl's PrototypicalNetworks
            same = "same per-episode accuracies as easyfsl" if np.array_equal(acc, easy_acc) else \
                f"accuracies differ from easyfsl in {(acc != easy_acc).sum()} episodes"
        figures.append(Figure(f"{name}: episodes/s (5-way 5-shot 15-query)", rate, "ep/s",
                              f"easyfsl ProtoNet {easy_rate:,.0f} ep/s", rate / easy_rate, same))
    return figures


def run_perf(task_name: str, data_dir: Path, cache_dir: Path | None, work_dir: Path, episodes: int,
             extraction_images: int, warm_method: str, memory_methods: list[str], backbone: str = "efficientnet_lite0",
             image_size: int = 128, memory_shots: str = "1,5,10,20", memory_episodes: int = 50,
             log=print) -> list[Figure]:
    task = load_task(task_name, data_dir)
    ctx = Context(task, Cache(cache_dir), backbone, image_size)
    log("features (cached after the first run) ...")
    features = torch.from_numpy(ctx.features())
    eps = task.episodes(5, 5, 15, episodes, seed=0)

    log(f"episode throughput over {episodes} episodes ...")
    with thread_policy(os.cpu_count() or 1):  # both sides under the threading that `bench run` uses
        figures = episode_figures(ctx, features, eps)

    log(f"feature extraction of {extraction_images} images ...")
    suite, raw = extraction_throughput(list(task.table.paths[:extraction_images]), image_size, backbone)
    figures.append(Figure(f"extraction (decode+resize+forward), {backbone} {image_size}px", suite, "img/s",
                          f"raw forward {raw:,.0f} img/s", suite / raw))

    env = {**os.environ, "BENCH_DATA_DIR": str(data_dir)}
    if cache_dir:
        env["BENCH_CACHE_DIR"] = str(cache_dir)
    common = ["run", "--task", task_name, "--quiet", "--backbone", backbone, "--image-size", str(image_size)]
    warm = common + ["--method", warm_method, "--shots", "5", "--episodes", "1"]
    log(f"warm start of `bench run --method {warm_method} --shots 5` ...")
    bench_subprocess(warm + ["--out", str(work_dir / "warmup.csv")], env)  # makes sure the caches are warm
    seconds, _ = bench_subprocess(warm + ["--out", str(work_dir / "warm.csv")], env)
    figures.append(Figure(f"warm start: `bench run --method {warm_method} --shots 5` to its first episode",
                          seconds, "s", "target < 10 s"))

    methods = [a for m in memory_methods for a in ("--method", m)]
    # Memory peaks while a method prepares (images, features, activations in memory), not with more episodes.
    log(f"peak memory of a {task_name} run ({', '.join(memory_methods)}, shots {memory_shots}, "
        f"{memory_episodes} episodes) ...")
    seconds, peak = bench_subprocess(common + methods + ["--shots", memory_shots, "--episodes", str(memory_episodes),
                                                         "--out", str(work_dir / "memory.csv")], env)
    figures.append(Figure(f"peak resident memory of that run ({seconds:.0f} s)", peak / 2**30, "GiB",
                          "target < 4 GiB"))
    return figures
