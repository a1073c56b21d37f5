"""Data-parallel training with fixed arithmetic (methods/parallel.py): the micro-batch layout follows the batch
alone, and the gradients, batch-norm statistics and trained networks are the same bits for any worker count."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from methods.features import thread_policy
from methods.parallel import Replicas, Workers, micro_batches, parallel_backward


def sizes(parts):
    return [p.stop - p.start for p in parts]


def test_micro_batches_follow_the_batch_size_alone():
    assert sizes(micro_batches(32, 16)) == [16, 16]
    assert sizes(micro_batches(19, 16)) == [10, 9]  # the last batch of an epoch: two halves, not 16 + 3
    assert sizes(micro_batches(7, 16)) == [7]
    assert sizes(micro_batches(5, 8, even=True)) == [3, 2]  # 1-shot 5-way: both cores busy
    assert sizes(micro_batches(25, 8, even=True)) == [7, 6, 6, 6]
    assert sizes(micro_batches(100, 8, even=True)) == [8, 8, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]
    assert sizes(micro_batches(1, 8, even=True)) == [1] and micro_batches(0, 8) == []
    for n in range(1, 60):
        for size in (1, 3, 8, 16):
            parts = micro_batches(n, size, even=n % 2 == 0)
            assert parts[0].start == 0 and parts[-1].stop == n
            assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
            assert max(sizes(parts)) <= size and max(sizes(parts)) - min(sizes(parts)) <= 1


def small_net(batch_norm: bool = True) -> nn.Module:
    torch.manual_seed(0)
    layers = [
        nn.Conv2d(3, 8, 3, padding=1),
        *([nn.BatchNorm2d(8)] if batch_norm else []),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    ]
    return nn.Sequential(*layers)


def data(n: int = 20):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 12, 12, generator=gen), torch.randint(0, 4, (n,), generator=gen)


def micro_batched_grads(model, x, y, workers, size=6):
    parts = micro_batches(len(x), size, even=True)
    params = list(model.parameters())
    with Workers(workers) as pool:
        loss = parallel_backward(
            pool,
            params,
            len(parts),
            lambda i: F.cross_entropy(model(x[parts[i]]), y[parts[i]], reduction="sum") / len(x),
        )
    return loss, [p.grad.clone() for p in params]


def test_gradients_are_the_same_bits_for_any_worker_count_and_equal_the_whole_batch_gradient():
    model = small_net(batch_norm=False)
    x, y = data()
    loss1, grads1 = micro_batched_grads(model, x, y, 1)
    for workers in (2, 3, 16):
        loss, grads = micro_batched_grads(model, x, y, workers)
        assert loss == loss1 and all(torch.equal(a, b) for a, b in zip(grads, grads1)), workers
    whole = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    for a, b in zip(grads1, whole):  # the same gradient, up to the order of the additions
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert loss1 == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-6)


def test_parts_run_on_workers_with_one_intra_op_thread_and_no_thread_outlives_the_pool():
    seen, before = [], torch.get_num_threads()
    param = torch.ones(3, requires_grad=True)

    def part_loss(i):
        seen.append((i, torch.get_num_threads(), threading.current_thread() is threading.main_thread()))
        return (param * (i + 1)).sum()

    threads = threading.active_count()
    with Workers(2) as pool:
        assert torch.get_num_threads() == 1  # the caller's reductions and optimiser step as well
        loss = parallel_backward(pool, [param], 4, part_loss)
    assert loss == 3 * (1 + 2 + 3 + 4) and torch.equal(param.grad, torch.full((3,), 10.0))
    assert sorted(seen) == [(i, 1, False) for i in range(4)]
    assert threading.active_count() == threads and torch.get_num_threads() == before
    unused = torch.ones(2, requires_grad=True)
    with Workers(1) as pool:
        parallel_backward(pool, [param, unused], 1, part_loss)
    assert unused.grad is None


def test_batch_norm_statistics_are_the_mean_of_the_micro_batches_and_one_part_is_the_plain_update():
    x, y = data(12)
    model = small_net().train()
    plain = copy.deepcopy(model)
    replicas = Replicas(model)
    replicas.start(1)
    with Workers(1) as pool:
        parallel_backward(pool, list(model.parameters()), 1, lambda i: F.cross_entropy(replicas[i](x), y))
    replicas.finish(1)
    plain(x)
    for a, b in zip(model.buffers(), plain.buffers()):
        assert torch.equal(a, b)
    # two micro-batches: the running statistics are the mean of what each would have made of the same start
    model, start = small_net().train(), small_net().train()
    replicas = Replicas(model)
    parts = micro_batches(12, 6)
    replicas.start(2)
    with Workers(2) as pool:
        parallel_backward(
            pool,
            list(model.parameters()),
            2,
            lambda i: F.cross_entropy(replicas[i](x[parts[i]]), y[parts[i]], reduction="sum"),
        )
    replicas.finish(2)
    halves = [copy.deepcopy(start) for _ in parts]
    for half, part in zip(halves, parts):
        half(x[part])
    bn, (bn0, bn1) = model[1], (h[1] for h in halves)
    torch.testing.assert_close(bn.running_mean, (bn0.running_mean + bn1.running_mean) / 2)
    torch.testing.assert_close(bn.running_var, (bn0.running_var + bn1.running_var) / 2)
    assert int(bn.num_batches_tracked) == 1
    assert all(p is q for twin in replicas.copies for p, q in zip(twin.parameters(), model.parameters()))


def train(workers: int, steps: int = 3) -> dict:
    model = small_net().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = data(20)
    parts = micro_batches(len(x), 8)
    replicas = Replicas(model)
    with thread_policy(workers), Workers() as pool:
        assert pool.n == workers
        for _ in range(steps):
            replicas.start(len(parts))
            parallel_backward(
                pool,
                list(model.parameters()),
                len(parts),
                lambda i: F.cross_entropy(replicas[i](x[parts[i]]), y[parts[i]], reduction="sum") / 20,
            )
            replicas.finish(len(parts))
            opt.step()
    return model.state_dict()


def test_a_network_trained_with_batch_norm_is_the_same_bits_with_1_2_and_16_workers():
    one = train(1)
    for workers in (2, 16):
        other = train(workers)
        assert all(torch.equal(one[k], other[k]) for k in one), workers
    assert not torch.equal(one["0.weight"], small_net().state_dict()["0.weight"])  # it did train


def test_micro_batches_are_augmented_with_the_draws_of_the_whole_batch():
    """Step 1 draws a batch's augmentation first and augments each micro-batch on its worker: the same bits
    as augmenting the batch at once, and the generator moves as it did."""
    from methods.augment import apply_augmentation, augment_batch, draw_augmentation

    x = torch.rand(9, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    gen_whole, gen_parts = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    whole = augment_batch(x, gen_whole)
    draws = draw_augmentation(len(x), gen_parts)
    parts = torch.cat([apply_augmentation(x[p], draws[p]) for p in micro_batches(len(x), 4)])
    assert torch.equal(parts, whole) and not torch.equal(whole, x)
    assert torch.equal(torch.rand(3, generator=gen_whole), torch.rand(3, generator=gen_parts))
