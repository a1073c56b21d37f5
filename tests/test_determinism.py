"""The same command and seed give bit-identical per-episode results: run twice, interrupted or not, and with
any number of threads (`bench run --threads N`).

torch (and oneDNN's convolutions) sum in chunks that depend on the intra-op thread count, so `bench run` pins
every computation to one intra-op thread (torch and BLAS) and spends its N threads on running whole, fixed
feature-extraction batches and training micro-batches side by side (methods.features.thread_policy,
methods/parallel.py). Nothing is rounded: the tests below compare the cached float32 features and checkpoints
bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fakes_reliability import bench, make_folder_dataset, read_rows, run_args, stable

from benchmark.cli import main
from methods.features import decode_images, feature_extractor, run_model, thread_policy, torch_threads
from tasks.datasets import load_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("determinism") / "data", per_class=30)


def cached_arrays(cache: Path) -> dict[str, bytes]:
    """Every cached payload (features, decoded images, checkpoints) by its relative path."""
    return {
        str(p.relative_to(cache)): p.read_bytes()
        for p in sorted(cache.rglob("*"))
        if p.is_file() and p.suffix in (".npy", ".pt")
    }


def test_one_and_two_threads_give_identical_results_and_caches(data, tmp_path):
    methods = [
        "--method",
        "protonet",
        "--method",
        "protonet:metatrain=true,steps=30,train_way=3,train_shots=1,train_queries=1",
    ]
    results = {}
    for threads in (1, 2):
        out, cache = tmp_path / f"t{threads}.csv", tmp_path / f"cache{threads}"
        done = bench(*run_args(data, out, cache, *methods, "--threads", threads, episodes=12, shots="1,2"))
        assert done.returncode == 0, done.stderr[-3000:]
        results[threads] = (stable(read_rows(out)), cached_arrays(cache))
    rows1, cache1 = results[1]
    rows2, cache2 = results[2]
    assert len(rows1) == 3 * 2 * 12 and rows1 == rows2
    assert any(k.startswith("features/") for k in cache1) and any(
        k.startswith("methods/methods/protonet/") for k in cache1
    )
    assert cache1.keys() == cache2.keys()
    for name in cache1:  # features computed with 1 and with 2 threads, and the trained embedding: same bits
        assert cache1[name] == cache2[name], name


def test_same_seed_same_rows_other_seed_other_episodes(data, tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        out = tmp_path / f"{name}.csv"
        argv = [str(a) for a in run_args(data, out, tmp_path / "cache", method="protonet", episodes=15)]
        assert main(argv + ["--seed", str(seed)]) == 0
        runs[name] = read_rows(out)
    assert stable(runs["a"]) == stable(runs["b"])
    # the control: another seed draws other episodes (so the comparison above can fail)
    assert [r["classes"] for r in runs["a"]] != [r["classes"] for r in runs["c"]]


def test_a_run_resumed_with_other_thread_counts_equals_a_fresh_one(data, tmp_path):
    def argv(out, episodes, threads):
        return [str(a) for a in run_args(data, out, tmp_path / "cache", "--threads", threads, episodes=episodes)]

    assert main(argv(tmp_path / "fresh.csv", 10, 1)) == 0
    assert main(argv(tmp_path / "pieces.csv", 4, 2)) == 0
    assert main(argv(tmp_path / "pieces.csv", 7, 1)) == 0
    assert main(argv(tmp_path / "pieces.csv", 10, 2)) == 0
    assert stable(read_rows(tmp_path / "pieces.csv")) == stable(read_rows(tmp_path / "fresh.csv"))


def test_thread_policy_pins_one_intra_op_thread_and_runs_batches_on_workers():
    import threading

    from threadpoolctl import threadpool_info

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append((torch.get_num_threads(), threading.current_thread() is threading.main_thread(), len(x)))
            return x.float().mean(dim=(2, 3))

    before = torch.get_num_threads()
    images = np.arange(130 * 3 * 4 * 4, dtype=np.int64).reshape(130, 3, 4, 4).astype(np.uint8)
    with thread_policy(3):
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")
        pooled = run_model(Probe(), images, batch_size=64)
        assert torch.get_num_threads() == 1
    assert sorted(seen) == [(1, False, 2), (1, False, 64), (1, False, 64)]  # fixed batches, one thread each
    assert torch.get_num_threads() == before
    assert np.array_equal(pooled, run_model(Probe(), images, batch_size=64))  # outputs in order


def test_forward_passes_are_bit_identical_for_any_worker_count(data):
    """Feature extraction under thread_policy(N) gives the bits of a plain one-thread pass, for N = 1, 2, 3.
    (Plain intra-op threading does not: 16-image batches differ in the 6th digit between 1 and 2 threads.)"""
    table = load_dataset(f"folder:{data}", ".")
    images = decode_images(list(table.paths), 48)
    model = feature_extractor("efficientnet_lite0")
    with torch_threads(1):
        reference = run_model(model, images, batch_size=16)
    assert reference.shape == (len(images), 1280)
    for n in (1, 2, 3):
        with thread_policy(n):
            assert np.array_equal(run_model(model, images, batch_size=16), reference), n


def test_training_is_the_same_bits_with_one_and_two_threads(data, tmp_path):
    """SDFT's step 1 (two micro-batches per batch), its step 2, finetune and MAML's meta-training compute
    micro-batches on as many worker threads as `--threads` says (methods/parallel.py): the step-1 checkpoint,
    every cached array and every row are the same bits with 1 and 2."""
    sdft = "sdft:epochs=2,batch_size=8,micro_batch=4,steps=5,lr=0.001"
    maml = "maml:meta_steps=6,train_way=3,train_shots=1,train_queries=1"
    methods = f"--method {sdft} --method finetune:steps=2 --method {maml}".split()
    results = {}
    for threads in (1, 2):
        out, cache = tmp_path / f"t{threads}.csv", tmp_path / f"cache{threads}"
        argv = [str(a) for a in run_args(data, out, cache, *methods, "--threads", threads, episodes=3, shots="1,2")]
        assert main(argv) == 0
        results[threads] = (stable(read_rows(out)), cached_arrays(cache))
    (rows1, cache1), (rows2, cache2) = results[1], results[2]
    assert len(rows1) == 4 * 2 * 3 and rows1 == rows2  # run_args adds linear-probe
    step1 = [k for k in cache1 if "/sdft-step1/" in k]
    assert len(step1) == 1 and cache1.keys() == cache2.keys()
    assert any("/maml/" in k for k in cache1) and any("/sdft-acts/" in k for k in cache1)
    for name in cache1:  # the step-1 checkpoint, SDFT's activations and top, MAML's initialisation
        assert cache1[name] == cache2[name], name
    scores = {(r["accuracy"], r["macro_f1"]) for r in read_rows(tmp_path / "t1.csv") if r["method"].startswith("sdft")}
    assert len(scores) > 1  # not one constant answer: the rows can tell two networks apart
