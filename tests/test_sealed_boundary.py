"""Adversarial plugins against the sealed method boundary (methods/base.py, docs/adding-a-method.md).

- a plugin that walks everything it is handed (attributes, __dict__, slots, closures, __self__, __wrapped__,
  partial arguments, dict and sequence items, weak references, and the globals of this package's functions)
  and records every integer or text array it reaches: none equals the labels of the target rows;
- a plugin that writes into every array it can reach from what it is handed and reassigns attributes: the
  rows of the methods after it are those of a run without it;
- a plugin that rewrites the support labels it is given and answers "class 0" everywhere: it is scored as
  such (the harness's truth is its own);
- a plugin that answers from the query's layout alone (the sampler orders it class by class): the harness
  presents the query in row order, so positions say nothing.
Walking interpreter frames or the garbage collector, and re-reading the dataset from disk, are out of scope
for in-process plugins (docs/adding-a-method.md).
"""

from __future__ import annotations

import csv
import functools
import types
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fakes_methods import class_image
from PIL import Image

from benchmark.protocols.episodes import run_benchmark
from benchmark.results import read_results
from benchmark.runner import MethodSpec, RunConfig
from methods.base import Context, FeatureMethod, FewShotMethod
from methods.cache import Cache
from methods.registry import create_method, register_method
from tasks.registry import load_task

OURS = ("methods", "tasks", "benchmark", "common")
SCALARS = (str, bytes, int, float, complex, bool, type(None), type(Ellipsis))
SEEN: list[tuple[str, np.ndarray]] = []  # what the walker recorded (never walked: this module is not ours)


def _ours(obj) -> bool:
    return str(getattr(obj, "__module__", "") or "").split(".")[0] in OURS


def _children(obj, with_globals: bool):
    """(name, child) pairs reachable from obj by attributes and items, without frames or gc."""
    if isinstance(obj, SCALARS) or isinstance(obj, types.ModuleType):
        return
    if isinstance(obj, np.ndarray):
        if obj.base is not None:
            yield ".base", obj.base
        return
    if isinstance(obj, torch.Tensor):
        if obj.grad is not None:
            yield ".grad", obj.grad
        return
    if isinstance(obj, (pd.DataFrame, pd.Series, pd.Index)):
        frame = obj.to_frame() if isinstance(obj, (pd.Series, pd.Index)) else obj
        for column in frame.columns:
            yield f"[{column!r}]", frame[column].to_numpy()
        yield ".index", frame.index.to_numpy()
        return
    if isinstance(obj, (dict, types.MappingProxyType)):
        for key, value in list(obj.items()):
            yield f"[{key!r}]", value
            yield f"<key {key!r}>", key
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        for i, value in enumerate(list(obj)):
            yield f"[{i}]", value
        return
    if isinstance(obj, weakref.ref):
        yield "()", obj()
        return
    if isinstance(obj, functools.partial):
        yield ".func", obj.func
        yield ".args", obj.args
        yield ".keywords", obj.keywords
    if isinstance(obj, types.CellType):
        try:
            yield ".cell_contents", obj.cell_contents
        except ValueError:
            pass
        return
    if isinstance(obj, types.FunctionType):
        yield ".__closure__", obj.__closure__ or ()
        yield ".__defaults__", obj.__defaults__ or ()
        yield ".__kwdefaults__", obj.__kwdefaults__ or {}
        if with_globals and _ours(obj):
            yield ".__globals__", {k: v for k, v in obj.__globals__.items() if not k.startswith("__")}
    if isinstance(obj, (types.MethodType, types.BuiltinMethodType)):
        yield ".__self__", getattr(obj, "__self__", None)
        yield ".__func__", getattr(obj, "__func__", None)
    if isinstance(obj, (staticmethod, classmethod)):
        yield ".__func__", obj.__func__
    if isinstance(obj, property):
        yield ".fget", obj.fget
    if isinstance(obj, type):
        if _ours(obj):
            yield ".__dict__", dict(vars(obj))
        return
    if hasattr(obj, "__wrapped__"):
        yield ".__wrapped__", obj.__wrapped__
    try:
        yield ".__dict__", dict(vars(obj))
    except TypeError:
        pass
    for cls in type(obj).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if isinstance(slot, str) and hasattr(obj, slot):
                yield f".{slot}", getattr(obj, slot)


def walk(roots: dict, with_globals: bool = True, limit: int = 300_000):
    """Every object reachable from roots (name -> object), with the path that reached it."""
    seen, keep, stack = set(), [], list(roots.items())
    while stack and len(seen) < limit:
        path, obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        keep.append(obj)  # computed children (columns, cell contents) must not be freed and their ids reused
        yield path, obj
        try:
            stack.extend((path + name, child) for name, child in _children(obj, with_globals))
        except Exception:  # an exotic object that refuses introspection is a dead end, not a failure
            continue


def api_results(ctx) -> dict:
    """What each zero-argument public method of the context returns (features, images, base pool, ...)."""
    out = {}
    for name in dir(ctx):
        attr = getattr(ctx, name, None)
        if name.startswith("_") or not callable(attr):
            continue
        try:
            out[f"ctx.{name}()"] = attr()
        except TypeError:  # takes arguments
            pass
    return out


def record(roots: dict) -> None:
    for path, obj in walk(roots):
        if isinstance(obj, torch.Tensor) and not obj.is_floating_point() and obj.ndim <= 2:
            obj = obj.detach().cpu().numpy()
        if isinstance(obj, np.ndarray) and obj.dtype.kind in "iuO" and obj.ndim <= 2:
            SEEN.append((path, np.array(obj, copy=True)))


class Walker(FewShotMethod):
    """Records every integer or text array reachable from what it is handed; answers class 0."""

    consumes = "both"

    def prepare(self, ctx):
        super().prepare(ctx)
        record({"ctx": ctx, "self": self, **api_results(ctx)})

    def fit(self, support_idx, support_y, n_way, rng):
        self.n_way = n_way
        record({"self": self, "support_idx": support_idx, "support_y": support_y, "rng": rng})

    def predict(self, query_idx):
        record({"self": self, "query_idx": query_idx})
        scores = np.zeros((len(query_idx), self.n_way), np.float32)
        scores[:, 0] = 1
        return scores


class Vandal(FeatureMethod):
    """Writes into everything it can reach from what it is handed (not through module globals, which any
    import reaches), reassigns the context's attributes, and rewrites its episode arguments."""

    consumes = "both"

    def prepare(self, ctx):
        super().prepare(ctx)
        for _, obj in list(walk({"ctx": ctx, "self": self, **api_results(ctx)}, with_globals=False)):
            if isinstance(obj, np.ndarray) and obj.size and obj.dtype.kind in "iuf":
                try:
                    obj.flags.writeable = True
                except ValueError:
                    continue  # a read-only view of memory it does not own: numpy refuses, as it should
                obj[...] = 0
            elif isinstance(obj, torch.Tensor) and obj.numel() and not obj.requires_grad:
                obj.zero_()
        for name in list(vars(ctx)):
            try:
                setattr(ctx, name, None)
            except (AttributeError, TypeError):
                pass
        # the run's other methods, where this package's globals lead to them: break their options
        for _, obj in list(walk({"self": self, "ctx.__class__": type(ctx), "self.__class__": FeatureMethod})):
            if isinstance(obj, FewShotMethod) and obj is not self:
                for name in list(vars(obj)):
                    setattr(obj, name, None)

    def fit(self, support_idx, support_y, n_way, rng):
        self.n_way = n_way
        support_idx[...] = support_idx[::-1].copy()
        support_y[...] = 0

    def predict(self, query_idx):
        query_idx[...] = 0
        return np.zeros((len(query_idx), self.n_way), np.float32)


class Echo(FewShotMethod):
    """Rewrites the support labels it is given to all zeros and answers class 0 everywhere."""

    def fit(self, support_idx, support_y, n_way, rng):
        self.n_way = n_way
        support_y[...] = 0
        if getattr(support_y, "base", None) is not None and support_y.base.flags.writeable:
            support_y.base[...] = 0

    def predict(self, query_idx):
        scores = np.zeros((len(query_idx), self.n_way), np.float32)
        scores[:, 0] = 1
        return scores


class Positions(FewShotMethod):
    """Answers from the query's layout alone: the i-th of every n_query / n_way rows is class i."""

    def fit(self, support_idx, support_y, n_way, rng):
        self.n_way = n_way

    def predict(self, query_idx):
        position = np.arange(len(query_idx)) * self.n_way // len(query_idx)
        return np.eye(self.n_way, dtype=np.float32)[position]


class HonestZero(Echo):
    def fit(self, support_idx, support_y, n_way, rng):
        self.n_way = n_way


for _name, _cls in (
    ("test-walker", Walker),
    ("test-vandal", Vandal),
    ("test-echo", Echo),
    ("test-zero", HonestZero),
    ("test-positions", Positions),
):
    register_method(_name)(_cls)

N_CLASSES, GROUPS, BASE_GROUPS, PER_GROUP, SIZE = 3, 6, 4, 3, 32


@pytest.fixture(scope="module")
def csv_task(tmp_path_factory) -> Path:
    """Images with neutral file names in shuffled order, base/target by the CSV's split column."""
    root = tmp_path_factory.mktemp("sealed")
    rng = np.random.default_rng(5)
    rows = [(c, g, i) for c in range(N_CLASSES) for g in range(GROUPS) for i in range(PER_GROUP)]
    order = rng.permutation(len(rows))
    with open(root / "images.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "group", "split"])
        for n, r in enumerate(order):
            c, g, i = rows[r]
            Image.fromarray(class_image(c, g, i, SIZE)).save(root / f"img{n:03d}.png")
            writer.writerow([f"img{n:03d}.png", f"kind{c}", f"scene{c}-{g}", "base" if g < BASE_GROUPS else "target"])
    return root / "images.csv"


def run(csv_path: Path, tmp: Path, methods: list[str], out: str, shots: int = 2, episodes: int = 4):
    config = RunConfig(
        methods=[MethodSpec.parse(m) for m in methods],
        task=f"csv:{csv_path}",
        shots=[shots],
        n_way=N_CLASSES,
        n_query=2,
        episodes=episodes,
        data_dir=tmp,
        cache_dir=csv_path.parent / "cache",
        out=tmp / out,
        image_size=SIZE,
    )
    run_benchmark(config)
    frame = read_results(tmp / out)
    return frame.sort_values(["method", "shots", "episode"]).reset_index(drop=True)


def leaks(arrays, labels: np.ndarray, target: np.ndarray, class_names) -> list[str]:
    """Paths of recorded arrays that give the target rows' labels (as ids or names, alone or by row)."""
    truth = labels[target]
    names = np.array(class_names, dtype=object)[truth]
    found = []

    def gives(v: np.ndarray) -> bool:
        for wanted in (truth, names):
            if v.shape == wanted.shape and (v == wanted).all():
                return True
            if v.shape == labels.shape and (v[target] == wanted).all():
                return True
        return False

    for path, a in arrays:
        vectors = [a] if a.ndim == 1 else [*a[:8], *a.T[:8]] if a.ndim == 2 else []
        if any(gives(np.asarray(v)) for v in vectors):
            found.append(path)
    return found


def test_no_attribute_path_reaches_the_target_labels(csv_task, tmp_path):
    SEEN.clear()
    run(csv_task, tmp_path, ["test-walker"], "walk.csv")
    task = load_task(f"csv:{csv_task}", tmp_path)
    assert len(SEEN) > 10  # the walker did reach things: base labels, rows, episode arguments
    base_labels = task.table.labels[task.base]
    assert any(a.shape == base_labels.shape and (a == base_labels).all() for _, a in SEEN)  # allowed, and seen
    found = leaks(SEEN, task.table.labels, task.target, task.class_names)
    assert not found, f"target labels reachable through {found[:5]}"


def test_a_vandal_does_not_change_the_rows_of_the_methods_after_it(csv_task, tmp_path):
    alone = run(csv_task, tmp_path, ["simpleshot", "knn"], "alone.csv", episodes=6)
    after = run(csv_task, tmp_path, ["test-vandal", "simpleshot", "knn", "test-vandal"], "after.csv", episodes=6)
    after = after[after["method"] != "test-vandal"].reset_index(drop=True)
    columns = [*"method episode classes accuracy macro_f1 class_accuracy".split()]
    assert len(alone) == 12 and alone["accuracy"].mean() > 0.5  # the methods work on this task
    pd.testing.assert_frame_equal(alone[columns], after[columns])


def test_rewriting_the_support_labels_does_not_change_the_scoring(csv_task, tmp_path):
    rows = run(csv_task, tmp_path, ["test-echo", "test-zero"], "echo.csv", shots=2)  # shots == queries
    echo, zero = rows[rows["method"] == "test-echo"], rows[rows["method"] == "test-zero"]
    assert len(echo) == 4 and echo["accuracy"].tolist() == pytest.approx([1 / N_CLASSES] * 4)
    assert (
        echo[["accuracy", "macro_f1", "class_accuracy"]]
        .reset_index(drop=True)
        .equals(zero[["accuracy", "macro_f1", "class_accuracy"]].reset_index(drop=True))
    )


def test_the_query_layout_does_not_give_its_classes_away(csv_task, tmp_path):
    rows = run(csv_task, tmp_path, ["test-positions", "simpleshot"], "positions.csv", episodes=8)
    positions, simpleshot = rows[rows["method"] == "test-positions"], rows[rows["method"] == "simpleshot"]
    assert simpleshot["accuracy"].mean() > 0.9  # the classes are easy; positions alone must not be
    assert positions["accuracy"].mean() < 0.7


def test_the_context_holds_no_task_and_hands_out_copies(csv_task, tmp_path):
    task = load_task(f"csv:{csv_task}", tmp_path)
    ctx = Context(task, Cache(tmp_path / "cache"), image_size=SIZE)
    assert not hasattr(ctx, "task")
    rows, labels = ctx.base_pool()
    assert np.array_equal(rows, task.base) and np.array_equal(labels, task.table.labels[task.base])
    rows[:] = 0
    labels[:] = 0
    again_rows, again_labels = ctx.base_pool()
    assert np.array_equal(again_rows, task.base) and np.array_equal(again_labels, task.table.labels[task.base])
    assert not np.shares_memory(ctx.base_groups(), ctx.base_groups())
    method = create_method("knn", k=3)
    assert "_options" not in vars(method) and method.config() == {"k": 3}
