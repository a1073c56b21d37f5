"""SDFT's step-2 options chosen on validation episodes: mix (weight-space mix of step 1 and ImageNet),
fuse (step 1's linear head added where episode classes are base classes), label_smoothing. At their
defaults they leave every score as it was; the config names every option, at its default too."""

import numpy as np
import pytest
import torch
from torch import nn

from common.errors import UserError
from methods.registry import create_method
from methods.sdft import STEP2_LATER, mix_weights
from tests.fakes_methods import make_context, make_task

FAST = dict(epochs=1, batch_size=8, steps=5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdft-step2")
    task = make_task(root / "data")
    return task, root / "cache"


def scores(name, task, cache_dir, episodes=3, classes=True, **options):
    fast = {k: v for k, v in FAST.items() if name != "base-classifier" or k != "steps"}  # step 1's options only
    method = create_method(name, **{**fast, **options})
    method.prepare(make_context(task, cache_dir))
    out = []
    episode_set = task.episodes(3, 2, 3, episodes, seed=0)
    for i in range(episodes):
        ep = episode_set.episode(i)
        named = {"classes": ep.classes} if classes else {}
        method.fit(ep.support_idx, ep.support_y, ep.n_way, np.random.default_rng(i), **named)
        out.append(method.predict(ep.query_idx))
    return np.stack(out)


def test_options_at_their_defaults_leave_config_and_scores_unchanged(tiny):
    task, cache = tiny
    default = create_method("sdft", **FAST)
    explicit = create_method("sdft", **FAST, **STEP2_LATER)
    assert set(STEP2_LATER) <= set(default.config())  # every option is in the key, at its default too
    assert explicit.config() == default.config()
    np.testing.assert_array_equal(scores("sdft", task, cache), scores("sdft", task, cache, **STEP2_LATER))
    assert create_method("sdft", **FAST, mix=0.5).config()["mix"] == 0.5  # a non-default value is in the key


def test_mix_weights_interpolates_floats_and_keeps_the_head_and_counters():
    torch.manual_seed(0)
    a, b = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)), nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    b[1].running_mean.fill_(4.0)
    b[1].num_batches_tracked.fill_(9)
    expected = {k: 0.25 * v + 0.75 * b.state_dict()[k] for k, v in a.state_dict().items() if v.is_floating_point()}
    mix_weights(a, b, 0.25)
    for k, v in expected.items():
        torch.testing.assert_close(a.state_dict()[k], v)
    assert int(a[1].num_batches_tracked) == 0


def test_mix_zero_is_imagenet_straight_to_step2_and_mix_one_is_sdft(tiny):
    task, cache = tiny
    np.testing.assert_array_equal(scores("sdft", task, cache, mix=0.0), scores("sdft-no-step1", task, cache))
    halfway = scores("sdft", task, cache, mix=0.5)
    assert not np.array_equal(halfway, scores("sdft", task, cache))
    assert not np.array_equal(halfway, scores("sdft-no-step1", task, cache))


def test_fuse_adds_the_step1_heads_log_probabilities_of_the_episode_classes(tiny):
    task, cache = tiny
    plain = torch.from_numpy(scores("sdft", task, cache))
    base = torch.from_numpy(scores("base-classifier", task, cache))  # step 1's logits, episode classes
    fused = torch.from_numpy(scores("sdft", task, cache, fuse=0.7))
    # fused = log_softmax(cosine) + 0.7 x log_softmax over *all* base classes, restricted to the episode's; so
    # fused - log_softmax(cosine) is 0.7 x the base-classifier's logits less a per-query constant
    delta = fused - torch.log_softmax(plain, -1)
    torch.testing.assert_close(delta - delta[..., :1], 0.7 * (base - base[..., :1]), rtol=1e-4, atol=1e-4)


def test_fuse_refuses_in_one_line_where_it_cannot_serve(tiny):
    task, cache = tiny
    with pytest.raises(UserError, match="needs the episode's class ids.*use fuse=0"):
        scores("sdft", task, cache, episodes=1, classes=False, fuse=1.0)
    method = create_method("sdft", **FAST, fuse=1.0)
    method.prepare(make_context(task, cache))
    ep = task.episodes(3, 2, 3, 1, seed=0).episode(0)
    with pytest.raises(UserError, match="every episode class to be a base class.*use fuse=0"):
        method.fit(ep.support_idx, ep.support_y, ep.n_way, np.random.default_rng(0), classes=ep.classes + 100)
    with pytest.raises(UserError, match="no step 1"):
        create_method("sdft-no-step1", fuse=1.0)
    with pytest.raises(UserError, match="mix=1.5 is outside"):
        create_method("sdft", mix=1.5)


def test_label_smoothing_changes_step2_and_stays_deterministic(tiny):
    task, cache = tiny
    smoothed = scores("sdft", task, cache, label_smoothing=0.2)
    np.testing.assert_array_equal(smoothed, scores("sdft", task, cache, label_smoothing=0.2))
    assert not np.array_equal(smoothed, scores("sdft", task, cache))


def test_dihedral_views_are_the_eight_distinct_turns_and_mirrors():
    from methods.sdft import dihedral_view

    images = np.random.default_rng(0).integers(0, 255, (2, 3, 5, 5), dtype=np.uint8)
    views = [dihedral_view(images, v) for v in range(8)]
    np.testing.assert_array_equal(views[0], images)
    np.testing.assert_array_equal(views[1][0, 0], np.rot90(images[0, 0]))
    np.testing.assert_array_equal(views[4][0, 0], images[0, 0][:, ::-1])
    assert len({v.tobytes() for v in views}) == 8


def test_views_8_trains_on_every_view_and_scores_a_turned_query_as_its_original(tmp_path):
    """A query's score is the mean over its 8 dihedral views, so an image and its quarter turn (the same
    orbit) score the same; the support trains on all its views."""
    from PIL import Image

    from tasks.datasets import table_from_rows
    from tasks.registry import Task
    from tests.fakes_methods import class_image

    paths, labels, groups, pool = [], [], [], []
    for c in range(3):
        for g in range(4):
            for i in range(3):
                image = class_image(c, g, i, 32)
                for turned in (False, True) if (g == 3 and i == 0) else (False,):
                    path = tmp_path / f"c{c}_g{g}_{i}{'_turned' if turned else ''}.png"
                    Image.fromarray(np.ascontiguousarray(np.rot90(image)) if turned else image).save(path)
                    paths.append(path), labels.append(c), groups.append(f"s{c}-{g}"), pool.append(g < 2)
    table = table_from_rows("turned", paths, labels, groups, ["a", "b", "c"])
    task = Task("turned", "", table, np.flatnonzero(pool), np.flatnonzero(~np.asarray(pool)))
    method = create_method("sdft", **FAST, views=8)
    method.prepare(make_context(task, tmp_path / "cache"))
    assert len(method.acts) == 8 * (len(paths) - len(task.base))  # every view of each row outside the base pool
    support = (
        np.flatnonzero(np.asarray(groups) == "s0-2").tolist()
        + np.flatnonzero(np.asarray(groups) == "s1-2").tolist()
        + np.flatnonzero(np.asarray(groups) == "s2-2").tolist()
    )
    method.fit(
        np.asarray(support), np.asarray([labels[i] for i in support]), 3, np.random.default_rng(0), classes=np.arange(3)
    )
    originals = [paths.index(tmp_path / f"c{c}_g3_0.png") for c in range(3)]
    turned = [paths.index(tmp_path / f"c{c}_g3_0_turned.png") for c in range(3)]
    np.testing.assert_allclose(
        method.predict(np.asarray(originals)), method.predict(np.asarray(turned)), rtol=1e-4, atol=1e-4
    )
    plain = create_method("sdft", **FAST)
    plain.prepare(make_context(task, tmp_path / "cache"))
    plain.fit(np.asarray(support), np.asarray([labels[i] for i in support]), 3, np.random.default_rng(0))
    assert not np.allclose(plain.predict(np.asarray(originals)), plain.predict(np.asarray(turned)), atol=1e-4)
