"""SDFT: cosine classifier maths, step-1 cache key, eval-mode prediction, cache reuse, ablations."""

import numpy as np
import pytest
import torch
from PIL import Image

from methods.base import Context
from methods.cache import Cache
from methods.cosine import CosineClassifier
from methods.progress import Progress
from methods.registry import create_method
from tasks.datasets import load_dataset
from tasks.registry import region_task

FAST = dict(epochs=1, batch_size=8, steps=5)


def test_cosine_scores_are_scaled_cosines():
    head = CosineClassifier(4, 3, scale=7.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [1.0, 1.0, 0, 0]]))
    x = torch.tensor([[3.0, 0, 0, 0], [0, 0.5, 0, 0]])
    expected = 7.0 * torch.tensor([[1.0, 0.0, 2**-0.5], [0.0, 1.0, 2**-0.5]])
    assert torch.allclose(head(x), expected, atol=1e-6)


def test_cosine_scores_ignore_feature_and_weight_norms():
    torch.manual_seed(0)
    head = CosineClassifier(8, 4, scale=10.0)
    with torch.no_grad():
        head.weight.normal_()
    x = torch.randn(5, 8)
    before = head(x)
    with torch.no_grad():
        head.weight.mul_(torch.tensor([[3.0], [0.1], [5.0], [2.0]]))
    assert torch.allclose(head(x * 17.0), before, atol=1e-5)
    assert before.abs().max() <= 10.0 + 1e-5


def test_cosine_scale_is_learnable_and_prototype_init_is_normalised_mean():
    head = CosineClassifier(2, 2, scale=5.0)
    assert head.scale.requires_grad
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, -1.0]])
    head.init_from_prototypes(x, torch.tensor([0, 0, 1]))
    assert torch.allclose(head.weight[0], torch.tensor([0.5, 0.5]))
    assert torch.allclose(head.weight[1], torch.tensor([0.0, -1.0]))
    head(x).sum().backward()
    assert head.scale.grad is not None


def make_tiny_task(root, n_classes=3, groups_per_class=4, per_group=4, size=24):
    """Images whose class is a colour/stripe pattern; groups are 'scenes' sharing a brightness."""
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for g in range(groups_per_class):
            for i in range(per_group):
                img = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
                img[:, :, c % 3] += 150
                img[:: (c + 2), :, :] = 255
                Image.fromarray(img).save(folder / f"g{g}_{i}.png")
    table = load_dataset(f"folder:{root}", root)
    groups = [f"{p.split('/')[-2]}-{p.split('/')[-1].split('_')[0]}" for p in table.paths]
    table.frame["group"] = groups
    return region_task("tiny", table, "tiny generated task")


@pytest.fixture
def tiny(tmp_path):
    return make_tiny_task(tmp_path / "data"), Cache(tmp_path / "cache")


def context(task, cache, **kw):
    return Context(task, cache, image_size=kw.pop("image_size", 32), seed=kw.pop("seed", 0), **kw)


def test_step1_cache_key_changes_with_every_input(tiny, tmp_path):
    task, cache = tiny
    sdft = create_method("sdft", **FAST)
    base_key = sdft.step1_key(context(task, cache))
    other_task = make_tiny_task(tmp_path / "other", n_classes=4)
    variants = {
        "seed": sdft.step1_key(context(task, cache, seed=1)),
        "image size": sdft.step1_key(context(task, cache, image_size=40)),
        "backbone": sdft.step1_key(context(task, cache, backbone="efficientnet_lite1")),
        "task data": sdft.step1_key(context(other_task, cache)),
        "epochs": create_method("sdft", **{**FAST, "epochs": 2}).step1_key(context(task, cache)),
        "lr": create_method("sdft", **{**FAST, "lr": 1e-3}).step1_key(context(task, cache)),
        "batch size": create_method("sdft", **{**FAST, "batch_size": 4}).step1_key(context(task, cache)),
        "micro-batch": create_method("sdft", **{**FAST, "micro_batch": 4}).step1_key(context(task, cache)),
    }
    assert all(key != base_key for key in variants.values()), variants
    assert len(set(variants.values())) == len(variants)
    # step-2 options do not change step 1
    assert create_method("sdft", **{**FAST, "steps": 9}).step1_key(context(task, cache)) == base_key


def test_step1_runs_once_then_is_read_from_cache(tiny):
    task, cache = tiny
    logs = []

    class Log(Progress):
        def log(self, message):
            logs.append(message)

    create_method("sdft", **FAST).prepare(context(task, cache, progress=Log()))
    assert any("epoch 1/1" in m for m in logs)
    logs.clear()
    create_method("sdft", **FAST).prepare(context(task, cache, progress=Log()))
    assert any("cache hit" in m for m in logs) and not any("epoch" in m for m in logs)


def test_step1_shows_batches_of_each_epoch_and_forecasts_from_the_last_run(tiny):
    """A bar per epoch counts its batches (the CLI draws it with an ETA); the first line forecasts the time
    from the last step 1 on this machine, recorded in the cache, or roughly from the image count."""
    from contextlib import contextmanager

    task, cache = tiny
    logs, bars = [], []

    class Recorder(Progress):
        @contextmanager
        def bar(self, description, total):
            bars.append([description, total, 0])
            yield lambda n=1: bars[-1].__setitem__(2, bars[-1][2] + n)

        def log(self, message):
            logs.append(message)

    opts = {**FAST, "epochs": 2, "patience": 5}
    create_method("sdft", **opts).prepare(context(task, cache, progress=Recorder()))
    epochs = [b for b in bars if b[0].startswith("sdft step 1: epoch") and "held-out" not in b[0]]
    assert [b[0] for b in epochs] == ["sdft step 1: epoch 1/2, batches of 8", "sdft step 1: epoch 2/2, batches of 8"]
    n_base = len(task.base)
    assert all(1 < b[1] <= -(-n_base // 8) and b[2] == b[1] for b in epochs)  # every batch advances the bar
    first = next(m for m in logs if m.startswith("sdft step 1: fine-tuning"))
    assert f"on {n_base} base images" in first and "no step 1 recorded on this machine yet" in first
    assert f"{n_base} images x up to 2 epochs take roughly" in first and "on an idle 2-core CPU; load average" in first
    logs.clear()
    create_method("sdft", **opts).prepare(context(task, cache, progress=Recorder(), seed=1))  # another checkpoint
    first = next(m for m in logs if m.startswith("sdft step 1: fine-tuning"))
    assert "the last step 1 on this machine took" in first and f"({n_base} images, 2 epochs, " in first
    # the forecast holds for an idle machine: it says how loaded this one is now, and was then
    assert "load average" in first and "when that step 1 started" in first


def test_sdft_predicts_in_eval_mode_without_query_labels_and_beats_chance(tiny):
    task, cache = tiny
    sdft = create_method("sdft", **FAST)
    sdft.prepare(context(task, cache))
    modes = []
    sdft.top.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    episodes = task.episodes(3, 2, 3, 6, seed=0)
    correct = []
    for ep in episodes:
        sdft.fit(ep.support_idx, ep.support_y, ep.n_way, np.random.default_rng(0))
        modes.clear()
        scores = sdft.predict(ep.query_idx)
        assert modes and not any(modes), "prediction must run in eval mode"
        assert scores.shape == (len(ep.query_idx), 3)
        perm = np.random.default_rng(1).permutation(len(ep.query_idx))
        np.testing.assert_allclose(sdft.predict(ep.query_idx[perm]), scores[perm], rtol=1e-5, atol=1e-5)
        correct.append((scores.argmax(1) == ep.query_y).mean())
    assert np.mean(correct) > 0.6  # chance is 1/3


def test_each_episode_starts_from_the_same_step1_weights(tiny):
    task, cache = tiny
    sdft = create_method("sdft", **FAST)
    sdft.prepare(context(task, cache))
    ep0, ep1 = list(task.episodes(3, 2, 3, 2, seed=0))
    sdft.fit(ep0.support_idx, ep0.support_y, 3, np.random.default_rng(0))
    first = sdft.predict(ep0.query_idx)
    sdft.fit(ep1.support_idx, ep1.support_y, 3, np.random.default_rng(0))
    sdft.fit(ep0.support_idx, ep0.support_y, 3, np.random.default_rng(0))
    np.testing.assert_array_equal(sdft.predict(ep0.query_idx), first)


def test_ablations_differ_from_sdft_in_exactly_their_component(tiny):
    task, cache = tiny
    full, no_step1, linear = (create_method(n, **FAST) for n in ("sdft", "sdft-no-step1", "sdft-linear-head"))
    assert full.config()["step1"] and not no_step1.config()["step1"]
    assert full.config()["head"] == "cosine" and linear.config()["head"] == "linear"
    linear.prepare(context(task, cache))
    assert isinstance(linear.make_head(3), torch.nn.Linear)
    with pytest.raises(TypeError, match="unknown option"):
        type(full)(bogus=1)


@pytest.mark.parametrize("name", ["sdft", "sdft-no-step1"])
def test_warm_prepare_uses_cached_top_without_network_or_images_and_gives_the_same_episodes(tiny, monkeypatch, name):
    task, cache = tiny
    episodes = task.episodes(3, 2, 3, 3, seed=0)

    def scores(method):
        out = []
        for ep in episodes:
            method.fit(ep.support_idx, ep.support_y, ep.n_way, np.random.default_rng(0))
            out.append(method.predict(ep.query_idx))
        return np.stack(out)

    cold = create_method(name, **FAST)
    cold.prepare(context(task, cache))
    cold_scores = scores(cold)

    def forbidden(*args, **kwargs):
        raise AssertionError("the warm path must not build the network or load images")

    import methods.sdft

    monkeypatch.setattr(methods.sdft, "create_backbone", forbidden)
    monkeypatch.setattr(Context, "images", forbidden)
    warm = create_method(name, **FAST)
    warm.prepare(context(task, cache))
    np.testing.assert_array_equal(warm.acts.numpy(), cold.acts.numpy())
    np.testing.assert_array_equal(scores(warm), cold_scores)
    # a corrupt cached top falls back to the whole network, which is forbidden here
    top_file = next((cache.root / "sdft-top").glob("*.pt"))
    top_file.write_bytes(b"corrupt")
    with pytest.raises(AssertionError, match="warm path"):
        create_method(name, **FAST).prepare(context(task, cache))


def test_activations_are_computed_only_outside_the_base_pool_which_is_refused(tiny):
    """Episodes never name base-pool rows (step 1 trained on them): their activations are not computed, and a
    method asked for one says so in one line instead of answering from another row."""
    from common.errors import UserError

    task, cache = tiny
    sdft = create_method("sdft", **FAST)
    sdft.prepare(context(task, cache))
    assert len(sdft.acts) == len(task.table) - len(task.base)
    ep = next(iter(task.episodes(3, 2, 3, 1, seed=0)))
    sdft.fit(ep.support_idx, ep.support_y, ep.n_way, np.random.default_rng(0))
    with pytest.raises(UserError, match="base pool"):
        sdft.predict(np.concatenate([ep.query_idx, task.base[:1]]))
    with pytest.raises(UserError, match="base pool"):
        sdft.fit(task.base[:3], np.arange(3), 3, np.random.default_rng(0))


def test_step2_is_the_same_bits_for_any_worker_count(tiny):
    from methods.features import thread_policy

    task, cache = tiny
    sdft = create_method("sdft-no-step1", **FAST)
    sdft.prepare(context(task, cache))
    ep = next(iter(task.episodes(3, 4, 3, 1, seed=0)))  # 12 support rows: micro-batches of 6
    answers = []
    for threads in (1, 2, 3):
        with thread_policy(threads):
            sdft.fit(ep.support_idx, ep.support_y, ep.n_way, np.random.default_rng(0))
            answers.append(sdft.predict(ep.query_idx))
    assert all(np.array_equal(answers[0], a) for a in answers[1:])
