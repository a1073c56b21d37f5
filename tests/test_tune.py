"""`bench tune`: every grid point on the same validation episodes, a stated choice, resumable; it never reads
a target episode (poisoned target labels and images change nothing); bad grids are one-line errors."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import write_image

from benchmark.cli import main
from benchmark.tuning import Grid
from common.errors import UserError


def make_csv(root: Path, poison: bool = False) -> Path:
    """3 classes x 10 scenes x 2 images; scenes 0-6 base, 7-9 target. Poisoned: the target rows' labels are
    shuffled and their images are noise."""
    rows, rng = ["path,label,group,split"], np.random.default_rng(5)
    target_rows = []
    for label, name in enumerate(("dune", "crater", "streak")):
        for g in range(10):
            for i in range(2):
                rel = f"img/{name}_{g}_{i}.png"
                split = "target" if g >= 7 else "base"
                if split == "target" and poison:
                    from PIL import Image

                    (root / "img").mkdir(parents=True, exist_ok=True)
                    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / rel)
                else:
                    write_image(root / rel, label, g)
                rows.append([rel, name, f"{name}{g}", split])
                if split == "target":
                    target_rows.append(len(rows) - 1)
    if poison:
        labels = [rows[i][1] for i in target_rows]
        for i, label in zip(target_rows, rng.permutation(labels)):
            rows[i][1] = label
    (root / "labels.csv").write_text("\n".join(r if isinstance(r, str) else ",".join(r) for r in rows) + "\n")
    return root / "labels.csv"


def tune_argv(tmp_path, csv, *extra):
    return [
        *"tune --method knn --grid k=3,5 --task".split(),
        f"csv:{csv}",
        *"--shots 1 --ways 3 --queries 2 --episodes 6 --image-size 32 --quiet --data-dir".split(),
        str(tmp_path),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(csv.parent / "validation.csv"),
        "--table",
        str(csv.parent / "table.csv"),
        *extra,
    ]


def chosen_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("chosen: "))


def test_poisoned_target_changes_nothing(tmp_path, capsys):
    results = {}
    for poison in (False, True):
        csv = make_csv(tmp_path / ("poisoned" if poison else "clean"), poison)
        assert main(tune_argv(tmp_path, csv)) == 0
        out = capsys.readouterr().out
        table = pd.read_csv(csv.parent / "table.csv")
        results[poison] = (chosen_line(out), table)
    (clean_choice, clean), (poisoned_choice, poisoned) = results[False], results[True]
    assert clean_choice == poisoned_choice
    columns = [*"method k episodes accuracy accuracy_ci95 delta delta_ci95 macro_f1 chosen".split()]
    pd.testing.assert_frame_equal(clean[columns], poisoned[columns])
    assert len(clean) == 3 and clean["episodes"].tolist() == [6, 6, 6]  # k=3, k=5 and the default (k=1)
    assert clean["accuracy"].nunique() > 1 or clean["chosen"].sum() == 1


def test_every_point_on_the_same_episodes_and_resumable(tmp_path, capsys):
    csv = make_csv(tmp_path / "data")
    assert main(tune_argv(tmp_path, csv)) == 0
    first = capsys.readouterr().out
    rows = pd.read_csv(csv.parent / "validation.csv")
    assert rows["manifest"].nunique() == 1 and set(rows["task"]) == {f"csv:{csv}@validation"}
    assert rows.groupby("method")["episode"].apply(sorted).apply(tuple).nunique() == 1
    mtime = (csv.parent / "validation.csv").stat().st_mtime_ns
    assert main(tune_argv(tmp_path, csv)) == 0  # all rows there: nothing runs again, the same answer
    assert (csv.parent / "validation.csv").stat().st_mtime_ns == mtime
    assert chosen_line(capsys.readouterr().out) == chosen_line(first)


def test_choice_rule_keeps_a_tied_default():
    from benchmark.runner import MethodSpec
    from benchmark.tuning import tuning_table

    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.8, 40)
    rows = []
    for label, shift in (("knn", 0.0), ("knn:k=3", 0.001), ("knn:k=5", 0.1)):
        noise = rng.normal(0, 0.05, 40) if label == "knn:k=3" else 0
        for i, acc in enumerate(np.clip(base + shift + noise, 0, 1)):
            rows.append({"method": label, "episode": i, "accuracy": acc, "macro_f1": acc, "seconds": 0.0})
    specs = [MethodSpec("knn"), MethodSpec("knn", {"k": 3}), MethodSpec("knn", {"k": 5})]
    table, chosen = tuning_table(pd.DataFrame(rows), specs, specs[0], [("k", [3, 5])])
    assert chosen.label == "knn:k=5"  # clearly better than the default
    table, chosen = tuning_table(
        pd.DataFrame([r for r in rows if r["method"] != "knn:k=5"]), specs[:2], specs[0], [("k", [3])]
    )
    assert chosen.label == "knn"  # k=3 within noise of the default: the default stays


@pytest.mark.parametrize(
    "grid, message",
    [
        ("kk=1,2", "--grid kk=1,2: method knn has no option 'kk'; did you mean k?"),
        ("k=", "bad --grid"),
        ("k", "bad --grid"),
    ],
)
def test_bad_grid_is_one_line(tmp_path, capsys, grid, message):
    argv = [*"tune --method knn --grid".split(), grid, "--data-dir", str(tmp_path), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_grid_values_are_checked_and_duplicates_refused():
    with pytest.raises(UserError, match="k must be an integer"):
        Grid.parse("knn", ["k=1,two"]).specs()
    with pytest.raises(UserError, match="set twice"):
        Grid.parse("knn:k=3", ["k=1,2"])
    specs, default = Grid.parse("knn", ["k=1,3"]).specs()
    assert [s.label for s in specs] == ["knn", "knn:k=3"] and default.label == "knn"  # k=1 is the default


def test_a_grid_point_equal_to_the_default_reuses_the_defaults_rows(tmp_path, capsys):
    """`--grid k=1,3` where 1 is the default runs k=1 as the default's own label, so the default's rows from an
    earlier tune (or `bench run --split validation`) are reused rather than run again under another name."""
    csv = make_csv(tmp_path / "data")
    argv = tune_argv(tmp_path, csv)
    assert main(argv) == 0
    first = pd.read_csv(csv.parent / "table.csv")
    grid = argv.index("--grid")
    again = argv[:grid] + ["--grid", "k=1,7"] + argv[grid + 2 :]
    assert main(again) == 0
    second = pd.read_csv(csv.parent / "table.csv")
    assert set(second["method"]) == {"knn", "knn:k=7"}

    def default(t):
        return t[t["method"] == "knn"][["accuracy", "episodes"]].to_numpy()

    assert (default(first) == default(second)).all()
    rows = pd.read_csv(csv.parent / "validation.csv")
    assert rows["method"].value_counts().to_dict() == {"knn": 6, "knn:k=3": 6, "knn:k=5": 6, "knn:k=7": 6}
