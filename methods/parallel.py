"""Data-parallel training with fixed arithmetic: every core busy, the same bits on any number of them.

torch and oneDNN split a convolution or a long reduction into chunks whose number follows the intra-op thread
count, so a network trained on two threads differs in the last bits from one trained on one. Here a training
batch is split instead into fixed micro-batches (`micro_batches`: their count and sizes follow from the batch
size alone), each micro-batch's gradient is computed on a worker thread that runs on one intra-op thread
(`torch.autograd.grad`, so no two threads write one `.grad`), and the gradients are added up in micro-batch
order on the calling thread. What runs where changes with the worker count; the arithmetic does not, so the
weights are the same bits with one worker, two or sixteen (tests/test_parallel.py).

Batch norm in training mode normalises each micro-batch with its own statistics ("ghost" batch norm), so
the micro-batch size is part of what a network is trained with and belongs in the keys of its checkpoints.
Each micro-batch runs on a replica of the network (`Replicas`) that shares its parameters and holds its own
running statistics, started from the network's; after the step the network's running statistics are the
mean of the replicas' (added in micro-batch order), and a micro-batch of the whole batch gives the plain
update exactly. Networks in eval mode have no state to split and run as they are on every worker.

The worker count is `bench run --threads N` (methods.features.thread_policy) and else the cores this process
may use; it decides speed only.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import torch
from torch import nn

from methods.features import inference_threads, torch_threads


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def training_workers(device: torch.device | None = None) -> int:
    """Worker threads for training: thread_policy's count (`--threads`), else every core this process may use;
    one off the CPU, where the device does the parallel work."""
    if device is not None and device.type != "cpu":
        return 1
    return max(1, int(inference_threads() or available_cores()))


def micro_batches(n: int, size: int, even: bool = False) -> list[slice]:
    """Consecutive slices of n rows: ceil(n / size) of them (with `even`, an even count where n allows, so that
    two cores get equal shares), as equal in length as possible, the longer ones first. A function of n,
    size and even alone: the layout is the same on every machine."""
    if n <= 0:
        return []
    count = -(-n // max(1, int(size)))
    if even and count % 2 and count < n:
        count += 1
    short, longer = divmod(n, count)
    bounds = [0]
    for i in range(count):
        bounds.append(bounds[-1] + short + (i < longer))
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


class Workers:
    """Threads that each run on one intra-op thread (torch's and MKL's), as a context manager: on entry the
    calling thread is pinned to one intra-op thread as well (for the optimiser step and the reductions), on
    exit the threads are gone (a sandboxed method may not leave threads running) and the thread count is
    restored. One worker runs everything on the calling thread."""

    def __init__(self, n: int | None = None, device: torch.device | None = None):
        self.n = max(1, int(n)) if n is not None else training_workers(device)
        self.pool: ThreadPoolExecutor | None = None
        self._stack = ExitStack()

    def __enter__(self) -> Workers:
        self._stack.enter_context(torch_threads(1))
        if self.n > 1:
            self.pool = self._stack.enter_context(
                ThreadPoolExecutor(self.n, initializer=torch.set_num_threads, initargs=(1,))
            )
        return self

    def __exit__(self, *exc) -> None:
        self.pool = None
        self._stack.close()

    def map(self, fn: Callable, items: Sequence) -> list:
        """[fn(item) for item in items], computed side by side, returned in order."""
        if self.pool is None or len(items) < 2:
            return [fn(item) for item in items]
        return list(self.pool.map(fn, items))


def parallel_backward(
    workers: Workers, params: Sequence[torch.Tensor], n_parts: int, part_loss: Callable[[int], torch.Tensor]
) -> float:
    """Set each parameter's `.grad` to the gradient of sum(part_loss(i) for i in range(n_parts)), computing the
    parts on `workers` and adding their gradients in part order; returns the summed loss. A parameter no part
    reaches gets `.grad = None`. part_loss(i) must read nothing that another part writes (see Replicas)."""
    params = list(params)

    def gradients(i: int):
        with torch.enable_grad():
            loss = part_loss(i)
            return loss.detach(), torch.autograd.grad(loss, params, allow_unused=True)

    results = workers.map(gradients, range(n_parts))
    with torch.no_grad():
        for j, p in enumerate(params):
            total = None
            for _, grads in results:
                g = grads[j]
                if g is not None:
                    total = g.clone() if total is None else total.add_(g)
            p.grad = total
    return float(sum(float(loss) for loss, _ in results))


class Replicas:
    """Per-micro-batch copies of a network in training mode: each shares the network's parameters (the same
    tensors, so gradients reach them) and owns its buffers (batch-norm running statistics), which `step` starts
    from the network's and folds back into it afterwards."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.copies: list[nn.Module] = []

    def _make(self) -> nn.Module:
        twin = copy.deepcopy(self.model)
        params = dict(self.model.named_parameters())
        for prefix, module in twin.named_modules():
            for name, value in module._parameters.items():
                if value is not None:
                    module._parameters[name] = params[f"{prefix}.{name}" if prefix else name]
        return twin

    def __getitem__(self, i: int) -> nn.Module:
        return self.copies[i]

    def start(self, n_parts: int) -> None:
        """Before a step of n_parts micro-batches: replicas 0..n_parts-1 in the network's mode, with its buffers."""
        while len(self.copies) < n_parts:
            self.copies.append(self._make())
        with torch.no_grad():
            for twin in self.copies[:n_parts]:
                twin.train(self.model.training)
                for mine, theirs in zip(twin.buffers(), self.model.buffers()):
                    mine.copy_(theirs)

    def finish(self, n_parts: int) -> None:
        """After the step: the network's floating-point buffers become the mean of the replicas' (added in
        part order), its integer ones (batch counts) replica 0's."""
        with torch.no_grad():
            for buffer, *values in zip(self.model.buffers(), *(twin.buffers() for twin in self.copies[:n_parts])):
                if not buffer.is_floating_point():
                    buffer.copy_(values[0])
                    continue
                total = values[0].clone()
                for value in values[1:]:
                    total.add_(value)
                buffer.copy_(total.div_(n_parts) if n_parts > 1 else total)
