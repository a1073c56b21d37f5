"""Comparison methods on a tiny generated task: accuracy above chance, no access to query labels, query
order, determinism, eval-mode prediction, per-episode resets, MAML's meta-training cache and maths."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from benchmark.runner import score_episode
from methods.maml import adapt
from methods.progress import Progress
from methods.registry import builtin_method_names, create_method
from tests.fakes_methods import make_context, make_task

# Small options that keep each built-in method fast on the tiny task (extend for new methods).
SDFT_FAST = dict(epochs=1, batch_size=8, steps=5)
FAST_OPTIONS = {
    "sdft": SDFT_FAST,
    "sdft-no-step1": SDFT_FAST,
    "sdft-linear-head": SDFT_FAST,
    "finetune": dict(steps=5, head_lr=1e-2),
    "maml": dict(meta_steps=40, train_way=3, train_shots=2, train_queries=3),
    "base-classifier": dict(epochs=10, batch_size=16, lr=1e-3, patience=10),  # its head must learn the tiny task
}
WAYS, SHOTS, QUERIES, EPISODES = 4, 2, 3, 4
MINE = ["baseline-pp", "simpleshot", "knn", "maml", "finetune"]


def make(name, **options):
    return create_method(name, **{**FAST_OPTIONS.get(name, {}), **options})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    task = make_task(root / "data")
    return task, make_context(task, root / "cache")


@pytest.fixture(scope="module")
def episodes(tiny):
    return list(tiny[0].episodes(WAYS, SHOTS, QUERIES, EPISODES, seed=0))


def run(method, episode, seed=0):
    named = {"classes": episode.classes} if method.takes_classes else {}  # as the harness gives them
    method.fit(
        episode.support_idx, episode.support_y, episode.n_way, np.random.default_rng([seed, episode.index]), **named
    )
    return method.predict(episode.query_idx)


def test_tiny_task_is_what_the_tests_assume(tiny, episodes):
    task, _ = tiny
    assert set(task.table.labels[task.base]) == set(task.table.labels[task.target]) == set(range(WAYS))
    assert not set(task.table.groups[task.base]) & set(task.table.groups[task.target])
    for ep in episodes:
        groups = task.table.groups
        assert not set(groups[ep.support_idx]) & set(groups[ep.query_idx])


@pytest.mark.parametrize("name", builtin_method_names())
def test_every_builtin_method_beats_chance_with_well_formed_scores(name, tiny, episodes):
    task, ctx = tiny
    method = make(name)
    method.prepare(ctx)
    accuracies = []
    for ep in episodes:
        scores = run(method, ep)
        assert scores.shape == (len(ep.query_idx), ep.n_way) and np.isfinite(scores).all()
        accuracies.append(score_episode(ep, scores, task.class_names)["accuracy"])
    assert np.mean(accuracies) >= 0.6, f"{name}: {accuracies} (chance is {1 / WAYS})"


@pytest.mark.parametrize("name", MINE + ["protonet", "linear-probe", "base-classifier"])
def test_predictions_follow_query_order_and_ignore_query_labels(name, tiny, episodes):
    task, ctx = tiny
    method = make(name)
    method.prepare(ctx)
    ep = episodes[0]
    scores = run(method, ep)
    perm = np.random.default_rng(3).permutation(len(ep.query_idx))
    np.testing.assert_allclose(method.predict(ep.query_idx[perm]), scores[perm], rtol=1e-4, atol=1e-5)
    # The harness path with the query's labels shuffled: the method's scores do not move, only the grade does.
    shuffled = replace(ep, query_y=ep.query_y[perm])
    again = run(method, shuffled)
    np.testing.assert_array_equal(again, scores)
    truth = score_episode(ep, scores, task.class_names)["accuracy"]
    assert truth >= 0.5
    assert score_episode(shuffled, again, task.class_names)["accuracy"] < truth


@pytest.mark.parametrize("name", MINE)
def test_same_rng_gives_identical_scores(name, tiny, episodes):
    _, ctx = tiny
    first, second = make(name), make(name)
    first.prepare(ctx)
    second.prepare(ctx)
    for ep in episodes[:2]:
        np.testing.assert_array_equal(run(first, ep, seed=5), run(second, ep, seed=5))


@pytest.mark.parametrize("name", ["baseline-pp", "finetune"])
def test_the_episode_rng_is_used(name, tiny, episodes):
    _, ctx = tiny
    method = make(name)
    method.prepare(ctx)
    assert not np.array_equal(run(method, episodes[0], seed=1), run(method, episodes[0], seed=2))


def test_finetune_predicts_in_eval_mode_and_resets_per_episode(tiny, episodes):
    _, ctx = tiny
    method = make("finetune")
    method.prepare(ctx)
    modes = []
    method.model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    ep0, ep1 = episodes[:2]
    method.fit(ep0.support_idx, ep0.support_y, ep0.n_way, np.random.default_rng(0))
    assert modes and not any(modes), "fine-tuning keeps batch-norm statistics by default"
    assert any(not torch.equal(v, method.initial_state[k]) for k, v in method.model.state_dict().items())
    modes.clear()
    first = method.predict(ep0.query_idx)
    assert modes and not any(modes), "prediction must run in eval mode"
    # another episode in between must not leak into a re-run of the first
    method.fit(ep1.support_idx, ep1.support_y, ep1.n_way, np.random.default_rng(0))
    method.fit(ep0.support_idx, ep0.support_y, ep0.n_way, np.random.default_rng(0))
    np.testing.assert_array_equal(method.predict(ep0.query_idx), first)
    textbook = make("finetune", freeze_bn=False)
    textbook.prepare(ctx)
    modes.clear()
    textbook.model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    textbook.fit(ep0.support_idx, ep0.support_y, ep0.n_way, np.random.default_rng(0))
    assert modes and all(modes)
    modes.clear()
    textbook.predict(ep0.query_idx)
    assert modes and not any(modes)


def test_maml_meta_training_is_cached_and_keyed_by_its_options(tmp_path):
    task = make_task(tmp_path / "data")
    logs = []

    class Log(Progress):
        def log(self, message):
            logs.append(message)

    ctx = make_context(task, tmp_path / "cache", progress=Log())
    first = make("maml")
    first.prepare(ctx)
    assert not first.cached and any("meta-step" in m for m in logs)
    logs.clear()
    second = make("maml", test_steps=3)  # an adaptation-only option shares the meta-training
    second.prepare(ctx)
    assert second.cached and any("cache hit" in m for m in logs) and not any("meta-step" in m for m in logs)
    for k in first.init:
        assert torch.equal(first.init[k], second.init[k])
    other = make("maml", meta_steps=5)
    other.prepare(ctx)
    assert not other.cached
    reseeded = make("maml")
    reseeded.prepare(make_context(task, tmp_path / "cache", seed=1))
    assert not reseeded.cached


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_adaptation_gradients_match_plain_autograd(first_order):
    gen = torch.Generator().manual_seed(0)
    head = nn.Linear(4, 3)
    x, xq = torch.randn(6, 4, generator=gen), torch.randn(5, 4, generator=gen)
    y, yq = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([2, 1, 0, 0, 1])
    params = {k: v.detach().clone().requires_grad_(True) for k, v in head.named_parameters()}
    adapted = adapt(head, params, x, y, steps=2, lr=0.5, first_order=first_order)
    got = torch.autograd.grad(F.cross_entropy(functional_call(head, adapted, (xq,)), yq), list(params.values()))
    w, b = (v.detach().clone().requires_grad_(True) for v in head.parameters())
    fw, fb = w, b
    for _ in range(2):
        gw, gb = torch.autograd.grad(F.cross_entropy(x @ fw.T + fb, y), (fw, fb), create_graph=not first_order)
        fw, fb = fw - 0.5 * gw, fb - 0.5 * gb
    want = torch.autograd.grad(F.cross_entropy(xq @ fw.T + fb, yq), (w, b))
    for g, h in zip(got, want):
        torch.testing.assert_close(g, h)


@pytest.mark.parametrize(
    "options, rows, last", [({}, 1, "weight"), ({"tied": False}, 3, "weight"), ({"hidden": 16}, 1, "2.weight")]
)
def test_maml_heads_handle_more_ways_than_meta_trained(options, rows, last, tiny, episodes):
    task, ctx = tiny
    method = make("maml", **options)  # meta-trained 3-way; the episodes are 4-way
    method.prepare(ctx)
    assert method.init[last].shape[0] == rows
    accuracies = []
    for ep in episodes:
        scores = run(method, ep)
        assert scores.shape == (WAYS * QUERIES, WAYS)
        accuracies.append(score_episode(ep, scores, task.class_names)["accuracy"])
    assert np.mean(accuracies) >= 0.6


def test_simpleshot_centres_on_the_base_pool_mean_and_batches(tiny, episodes):
    task, ctx = tiny
    method = make("simpleshot")
    method.prepare(ctx)
    raw = torch.from_numpy(ctx.features())
    torch.testing.assert_close(method.base_mean, raw[task.base].mean(0))
    expected = F.normalize(raw - raw[task.base].mean(0), dim=-1)
    torch.testing.assert_close(method.features, expected)
    support = torch.stack([torch.from_numpy(ep.support_idx) for ep in episodes])
    support_y = torch.stack([torch.from_numpy(ep.support_y) for ep in episodes])
    query = torch.stack([torch.from_numpy(ep.query_idx) for ep in episodes])
    batched = method.predict_batch(support, support_y, query, WAYS).numpy()
    for i, ep in enumerate(episodes):
        np.testing.assert_allclose(batched[i], run(method, ep), rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="norm"):
        create_method("simpleshot", norm="bogus")


def test_knn_votes_ties_and_k_larger_than_support():
    knn = create_method("knn", k=3)
    support = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    knn.fit_features(support, torch.tensor([0, 1, 1, 2]), 3, np.random.default_rng(0))
    scores = knn.predict_features(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    # query 0: neighbours 0, 1 (similarity 1) and 3 (0.6), one vote each; classes 0 and 1 tie exactly and
    # the lower index wins
    torch.testing.assert_close(scores[0], torch.tensor([1 / 3 + 1 / 36, 1 / 3 + 1 / 36, 1 / 3 + 0.6 / 36]))
    assert scores[0].argmax() == 0
    # query 1: neighbours 2 (class 1), 3 (class 2), then 0 (class 0, similarity 0): votes 1/3 each, the
    # similarity term orders them 1 > 2 > 0
    assert scores[1].argsort(descending=True).tolist() == [1, 2, 0]
    knn_big = create_method("knn", k=50)
    knn_big.fit_features(support, torch.tensor([0, 1, 1, 2]), 3, np.random.default_rng(0))
    big = knn_big.predict_features(torch.tensor([[1.0, 0.0]]))
    assert big[0].argmax() == 1  # all 4 neighbours vote: class 1 has two
    with pytest.raises(Exception, match="k must be"):
        create_method("knn", k=0)


def test_baseline_pp_scores_are_bounded_by_the_scale(tiny, episodes):
    _, ctx = tiny
    method = make("baseline-pp", scale=4.0)
    method.prepare(ctx)
    assert np.abs(run(method, episodes[0])).max() <= 4.0 + 1e-5


def test_finetune_micro_batches_give_the_whole_batch_gradient_the_same_bits_on_any_worker_count(tiny, monkeypatch):
    """Each step's support batch is split into micro-batches (at most MICRO_BATCH images, an even count) computed
    side by side: with frozen batch norm their summed gradient is the whole batch's up to rounding, and the
    same bits with 1, 2 or 3 workers; a fitted episode answers the same with 1 and 2 threads."""
    import methods.finetune
    from methods.features import thread_policy
    from methods.parallel import Workers, micro_batches, parallel_backward

    task, ctx = tiny
    method = make("finetune")
    method.prepare(ctx)
    method.model.load_state_dict(method.initial_state)
    method.model.eval()
    method.head = nn.Linear(method.model.num_features, WAYS)
    params = [*method.model.parameters(), *method.head.parameters()]
    batch = torch.from_numpy(method.images[task.target[:7]])
    y = torch.as_tensor(np.arange(7) % WAYS)

    def gradients(size, workers):
        parts = micro_batches(len(batch), size, even=True)
        with Workers(workers) as pool:
            parallel_backward(pool, params, len(parts), lambda i: method.part_loss(batch[parts[i]], y[parts[i]], 7))
        return [p.grad.clone() for p in params]

    whole, parts = gradients(100, 1), gradients(3, 1)  # one pass; passes of 2, 2, 2 and 1 images
    for a, b in zip(whole, parts):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(whole, parts))  # four passes, not one
    for workers in (2, 3):
        assert all(torch.equal(a, b) for a, b in zip(parts, gradients(3, workers)))
    monkeypatch.setattr(methods.finetune, "MICRO_BATCH", 2)
    ep = next(iter(task.episodes(WAYS, SHOTS, QUERIES, 1, seed=0)))
    answers = []
    for threads in (1, 2):
        with thread_policy(threads):
            answers.append(run(method, ep))
    np.testing.assert_array_equal(answers[0], answers[1])


@pytest.mark.parametrize(
    "text, config",
    [
        ("baseline-pp:learn_scale=no", {"learn_scale": False}),
        ("baseline-pp:learn_scale=YES", {"learn_scale": True}),
        ("baseline-pp:learn_scale=0", {"learn_scale": False}),
        ("baseline-pp:learn_scale=True", {"learn_scale": True}),
        ("baseline-pp:scale=10", {"scale": 10.0}),
        ("baseline-pp:scale=10.0", {"scale": 10.0}),
        ("knn:k=3", {"k": 3}),
        ("simpleshot:norm=l2n", {"norm": "l2n"}),
        ("sdft:steps=5,lr_top=1", {"steps": 5, "lr_top": 1.0}),
    ],
)
def test_method_options_are_converted_to_their_type_and_recorded_so(text, config):
    from benchmark.runner import MethodSpec

    spec = MethodSpec.parse(text)
    method = create_method(spec.name, **spec.options)
    recorded = method.config()
    for key, value in config.items():
        assert recorded[key] == value and type(recorded[key]) is type(value)
    if spec.name == "baseline-pp":
        assert method.learn_scale is recorded["learn_scale"] and method.scale == recorded["scale"]


@pytest.mark.parametrize(
    "text, option",
    [
        ("baseline-pp:learn_scale=maybe", "learn_scale"),
        ("baseline-pp:learn_scale=2", "learn_scale"),
        ("knn:k=2.7", "k"),
        ("knn:k=true", "k"),
        ("linear-probe:C=nan", "C"),
        ("linear-probe:C=inf", "C"),
        ("baseline-pp:lr=-inf", "lr"),
        ("protonet:metatrain=1.0", "metatrain"),
        ("sdft:epochs=2.5", "epochs"),
    ],
)
def test_method_options_of_the_wrong_type_are_one_line_errors(text, option):
    from benchmark.runner import MethodSpec
    from common.errors import UserError

    spec = MethodSpec.parse(text)
    with pytest.raises(UserError) as error:
        create_method(spec.name, **spec.options)
    message = str(error.value)
    value = text.split("=")[-1]
    assert "\n" not in message and spec.name in message and f"{option}={value}".lower() in message.lower()
    assert "must be" in message
