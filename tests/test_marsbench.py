"""`marsbench:PATH` (Mars-Bench's classification layout), fixed-K on it (its K-shot lists, --cap) and weighted F1."""

import csv

import numpy as np
import pytest
from fakes_marsbench import CLASSES, marsbench_like, write_annotation
from sklearn.metrics import f1_score

from benchmark.cli import main
from benchmark.scoring import score_fixed_k as score
from common.errors import UserError
from tasks.datasets import load_dataset
from tasks.datasets.marsbench import GROUP_RULES, group_rule
from tasks.protocols import fixed_k_draw, fixed_k_pools, fixed_k_sets
from tasks.registry import load_task


def test_reads_the_miniature_with_its_classes_splits_and_scenes(tmp_path):
    root = marsbench_like(tmp_path / "domars16k")
    table = load_dataset(f"marsbench:{root}", tmp_path)
    assert table.class_names == tuple(CLASSES)  # in Mars-Bench's label order
    assert len(table) == 3 * (6 + 2 + 4)
    for path, label, group, split in zip(table.paths, table.labels, table.groups, table.splits):
        parts = path.split("/")
        assert parts[-4:-2] == ["data", split] and parts[-2] == table.class_names[label]
        assert parts[-1].startswith(group + "_CX")  # the CTX product id is the scene
    assert {s: int((table.splits == s).sum()) for s in ("train", "val", "test")} == {"train": 18, "val": 6, "test": 12}
    task = load_task(f"marsbench:{root}", tmp_path)
    assert set(table.splits[task.base]) == {"train", "val"} and set(table.splits[task.target]) == {"test"}


def test_a_set_without_scene_names_gets_one_group_per_image_and_one_notice(tmp_path, capsys):
    root = marsbench_like(tmp_path / "plain", naming="plain")
    table = load_dataset(f"marsbench:{root}", tmp_path)
    load_dataset(f"marsbench:{root}", tmp_path)
    assert len(set(table.groups)) == len(table)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give no source scene" in err and err.startswith("notice: ")


@pytest.mark.parametrize(
    "file_ids, rule, groups",
    [
        (["B01_001_XN_CX10_CY3.png", "B01_001_XN_CX12_CY3.png"], "ctx-product", ["B01_001_XN", "B01_001_XN"]),
        (
            ["ESP_011623_2100_RED-0069.jpg", "ESP_011623_2100_RED-0069-r90.jpg", "PSP_001234_1800_RED-0001.jpg"],
            "hirise-observation",
            ["ESP_011623_2100", "ESP_011623_2100", "PSP_001234_1800"],
        ),
        (
            ["0003ML0000000110100031E01_DRCL.JPG", "0003MR0000000110100031E01_DRCL.JPG", "0150MH0001.JPG"],
            "msl-sol",
            ["0003", "0003", "0150"],
        ),
        (["ESP_011623_2100_RED-0069.jpg", "frost_17.png"], "image", ["ESP_011623_2100_RED-0069.jpg", "frost_17.png"]),
    ],
)
def test_group_rules(file_ids, rule, groups):
    assert {name for name, _, _ in GROUP_RULES} >= {"ctx-product", "hirise-observation", "msl-sol"}
    assert group_rule(file_ids) == (rule, groups)


@pytest.mark.parametrize(
    "change, message",
    [
        ("drop-column", r"lacks column\(s\) feature_name"),
        ("missing-image", "do not exist"),
        ("two-folders-one-label", "gives label 0 to two class folders"),
        ("bad-split", r"has split\(s\) .training."),
    ],
)
def test_bad_sets_are_one_line_errors(tmp_path, change, message):
    root = marsbench_like(tmp_path / "set")
    with open(root / "annotation.csv", newline="") as f:
        rows = [tuple(r.values()) for r in csv.DictReader(f)]
    if change == "drop-column":
        (root / "annotation.csv").write_text("file_id,label,split\n" + "".join(f"{r[0]},{r[2]},{r[3]}\n" for r in rows))
    elif change == "missing-image":
        next((root / "data" / "test").rglob("*.png")).unlink()
    elif change == "two-folders-one-label":
        write_annotation(root / "annotation.csv", [(f, c, 0 if c == "cra" else lab, s) for f, c, lab, s in rows])
    else:
        write_annotation(
            root / "annotation.csv", [(f, c, lab, "training" if s == "train" else s) for f, c, lab, s in rows]
        )
    with pytest.raises(UserError, match=message) as exc:
        load_dataset(f"marsbench:{root}", tmp_path)
    assert "\n" not in str(exc.value)


def test_fixed_k_uses_mars_benchs_k_shot_list(tmp_path):
    root = marsbench_like(tmp_path / "set", shot_lists=[2])
    task = load_task(f"marsbench:{root}", tmp_path)
    listed = fixed_k_sets(task, 2, seeds=[0, 1, 5])
    assert fixed_k_draw(task, 2).draw == "marsbench-list" and fixed_k_draw(task, 3).draw == "random"
    names = [p.rsplit("/", 1)[1] for p in task.table.paths]
    with open(root / "few_shot" / "2_shot.csv", newline="") as f:
        wanted = {r["file_id"] for r in csv.DictReader(f) if r["split"] == "train"}
    for s in listed:  # the list, whatever the seed, labelled by class, scored on the whole test split
        assert {names[i] for i in s.train_idx} == wanted and len(s.train_idx) == 6
        assert np.array_equal(task.table.labels[s.train_idx], s.train_y)
        assert np.array_equal(s.test_idx, fixed_k_pools(task).test)
    drawn = fixed_k_sets(task, 3, seeds=[0, 1])  # no 3-shot list: seeded random draws as for any set
    assert not np.array_equal(np.sort(drawn[0].train_idx), np.sort(drawn[1].train_idx))


def test_a_k_shot_list_naming_an_unknown_image_is_refused(tmp_path):
    root = marsbench_like(tmp_path / "set", shot_lists=[1])
    text = (root / "few_shot" / "1_shot.csv").read_text().replace(",cra,1,train", ",smo,1,train", 1)
    (root / "few_shot" / "1_shot.csv").write_text(text)
    with pytest.raises(UserError, match="not a training image"):
        fixed_k_sets(load_task(f"marsbench:{root}", tmp_path), 1, [0])


def test_cap_takes_all_of_a_smaller_class_and_names_it(tmp_path):
    counts = {
        "train": {"aec": 6, "cra": 2, "smo": 6},
        "val": {"aec": 1, "cra": 1, "smo": 1},
        "test": {"aec": 3, "cra": 3, "smo": 3},
    }
    task = load_task(f"marsbench:{marsbench_like(tmp_path / 'set', counts=counts)}", tmp_path)
    with pytest.raises(UserError, match=r"cra \(2\) has fewer.*--cap"):
        fixed_k_sets(task, 4, [0])
    assert fixed_k_draw(task, 4, cap=True).capped == ("cra (2)",)
    assert fixed_k_draw(task, 2, cap=True).capped == ()
    for s in fixed_k_sets(task, 4, [0, 1], cap=True):
        assert np.bincount(s.train_y).tolist() == [4, 2, 4]
        assert np.array_equal(task.table.labels[s.train_idx], s.train_y)
    # capping changes nothing for a K every class can give: the same draws as without it
    for a, b in zip(fixed_k_sets(task, 2, [3, 4], cap=True), fixed_k_sets(task, 2, [3, 4])):
        assert np.array_equal(a.train_idx, b.train_idx)


def weighted_f1_as_marsbench(truth, pred, n_classes):
    """torchmetrics' F1Score(task="multiclass", average="weighted"), which Mars-Bench's classification models log
    as test/F1Score_weighted: per-class F1 = 2tp / (2tp + fp + fn) (0 when undefined), weighted by support."""
    f1, support = np.zeros(n_classes), np.zeros(n_classes)
    for c in range(n_classes):
        tp = np.sum((pred == c) & (truth == c))
        fp, fn = np.sum((pred == c) & (truth != c)), np.sum((pred != c) & (truth == c))
        f1[c] = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0
        support[c] = np.sum(truth == c)
    return float((f1 * support).sum() / support.sum())


@pytest.mark.parametrize("seed", range(5))
def test_weighted_f1_is_mars_benchs_and_sklearns(seed):
    rng = np.random.default_rng(seed)
    n_classes = 5
    truth = rng.choice(4, size=60, p=[0.6, 0.2, 0.15, 0.05])  # class 4 absent from the truth
    scores = rng.normal(size=(60, n_classes))
    scores[:, 3] -= 10  # class 3 never predicted
    pred = scores.argmax(1)
    got = score(truth, scores, n_classes)["weighted_f1"]
    assert got == pytest.approx(f1_score(truth, pred, average="weighted", zero_division=0), abs=1e-12)
    assert got == pytest.approx(weighted_f1_as_marsbench(truth, pred, n_classes), abs=1e-12)
    assert got != pytest.approx(score(truth, scores, n_classes)["macro_f1"])  # a different average


def test_bench_fixedk_cap_lists_the_capped_classes_in_rows_and_table(tmp_path, capsys):
    counts = {
        "train": {"aec": 4, "cra": 2, "smo": 4},
        "val": {"aec": 1, "cra": 1, "smo": 1},
        "test": {"aec": 2, "cra": 2, "smo": 2},
    }
    root = marsbench_like(tmp_path / "set", counts=counts)
    out = tmp_path / "fk.csv"
    args = [
        "fixedk",
        "--task",
        f"marsbench:{root}",
        "--data-dir",
        str(tmp_path),
        "--cache-dir",
        str(tmp_path / "c"),
        *"--image-size 32 --shots 1,3 --seeds 0-1 --out".split(),
        str(out),
        "--quiet",
        "--method",
        "simpleshot",
    ]
    assert main(args) == 2 and "--cap" in capsys.readouterr().err and not out.exists()
    assert main(args + ["--cap"]) == 0
    printed = capsys.readouterr().out
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["shots"], r["capped"], r["draw"], r["n_train"]) for r in rows} == {
        ("1", "", "random", "3"),
        ("3", "cra (2)", "random", "8"),
    }
    assert "capped" in printed and "cra (2)" in printed
