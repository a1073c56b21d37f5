"""base-classifier: SDFT's step-1 network and linear head, restricted to the episode's classes; the same
step-1 checkpoint as SDFT; refuses (before training) where episode classes are not base classes."""

import numpy as np
import pytest

from benchmark.protocols.episodes import run_benchmark
from benchmark.runner import MethodSpec, RunConfig
from common.errors import UserError
from methods.backbones import create_backbone
from methods.features import run_model
from methods.progress import Progress
from methods.registry import create_method
from tasks.registry import Task
from tests.fakes_methods import make_context, make_task

FAST = dict(epochs=1, batch_size=8)
TRAINED = dict(epochs=10, batch_size=16, lr=1e-3, patience=10)  # a head that has learnt the tiny task (~5 s)


class Log(Progress):
    def __init__(self):
        self.lines = []

    def log(self, message):
        self.lines.append(message)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("base-classifier")
    task = make_task(root / "data")
    return task, make_context(task, root / "cache"), root / "cache"


def test_scores_are_the_step1_heads_logits_of_the_episode_classes(tiny):
    task, ctx, _ = tiny
    method = create_method("base-classifier", **FAST)
    method.prepare(ctx)
    assert method.step1_key(ctx) == create_method("sdft", **FAST).step1_key(ctx)  # SDFT's checkpoint, shared
    state = ctx.cache.cached_state_dict("sdft-step1", method.step1_key(ctx))
    model = create_backbone(ctx.backbone, pretrained=False)
    model.reset_classifier(len(np.unique(ctx.base_pool()[1])))
    model.load_state_dict(state)
    ep = task.episodes(3, 2, 3, 1, seed=0).episode(0)
    method.fit(ep.support_idx, ep.support_y, ep.n_way, np.random.default_rng(0), classes=ep.classes)
    scores = method.predict(ep.query_idx)
    logits = run_model(model, ctx.images()[ep.query_idx])
    np.testing.assert_allclose(scores, logits[:, ep.classes], rtol=1e-4, atol=1e-4)


def test_sdft_reuses_the_checkpoint_base_classifier_trained(tiny):
    task, ctx, cache_dir = tiny
    create_method("base-classifier", **FAST).prepare(ctx)
    log = Log()
    sdft = create_method("sdft", **FAST, steps=2)
    sdft.prepare(make_context(task, cache_dir, progress=log))
    assert any("cache hit" in line for line in log.lines) and not any("fine-tuning" in line for line in log.lines)


def test_beats_chance_through_the_harness_which_gives_it_the_episode_classes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = make_task(tmp_path / "data")  # its images as a CSV task with its own base/target split
    split = np.where(np.isin(np.arange(len(task.table)), task.base), "base", "target")
    lines = ["path,label,group,split"] + [
        f"{p},{task.class_names[y]},{g},{s}"
        for p, y, g, s in zip(task.table.paths, task.table.labels, task.table.groups, split)
    ]
    csv = tmp_path / "data" / "labels.csv"
    csv.write_text("\n".join(lines) + "\n")
    config = RunConfig(
        methods=[MethodSpec("base-classifier", TRAINED)],
        task=f"csv:{csv}",
        shots=[1],
        data_dir=tmp_path,
        cache_dir=tmp_path / "cache",
        n_way=3,
        n_query=2,
        episodes=6,
        image_size=32,
    )
    rows = run_benchmark(config)
    assert len(rows) == 6 and rows["accuracy"].mean() > 0.6, rows["accuracy"].tolist()


def test_refuses_class_disjoint_tasks_before_training(tiny, tmp_path):
    task, _, _ = tiny
    labels = task.table.labels
    disjoint = Task(
        "disjoint",
        "base classes 0-1, target classes 2-3",
        task.table,
        np.flatnonzero(labels < 2),
        np.flatnonzero(labels >= 2),
    )
    log = Log()
    ctx = make_context(disjoint, tmp_path / "cache", progress=log)
    with pytest.raises(UserError, match="episode classes are not all base classes") as info:
        create_method("base-classifier", **FAST).prepare(ctx)
    assert "\n" not in str(info.value)
    assert not any("fine-tuning" in line for line in log.lines)
    assert not list((tmp_path / "cache").rglob("*sdft-step1*"))


def test_step2_options_are_refused_and_config_is_step1s():
    with pytest.raises(UserError, match="unknown option 'steps'"):
        create_method("base-classifier", steps=3)
    assert set(create_method("base-classifier").config()) == {
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "patience",
        "val_folds",
        "micro_batch",
    }


def test_fit_without_the_episode_classes_is_one_line(tiny):
    task, ctx, _ = tiny
    method = create_method("base-classifier", **FAST)
    method.prepare(ctx)
    ep = task.episodes(3, 2, 3, 1, seed=0).episode(0)
    with pytest.raises(UserError, match="needs the episode's class ids"):
        method.fit(ep.support_idx, ep.support_y, ep.n_way, np.random.default_rng(0))


def test_step1_does_not_depend_on_torchs_global_generator(tmp_path):
    """Step 1's new linear head is initialised from the run's seed: what ran before (other tests, other methods)
    must not change the checkpoint, and so the base classifier's scores."""
    import torch

    task = make_task(tmp_path / "data")
    heads = []
    for i, global_seed in enumerate((1, 2)):
        torch.manual_seed(global_seed)
        method = create_method("base-classifier", **FAST)
        method.prepare(make_context(task, tmp_path / f"cache{i}"))
        heads.append(method.weight)
    assert torch.equal(heads[0], heads[1])
