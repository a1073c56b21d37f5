"""A miniature Mars-Bench classification set in the layout Mars-Bench's loaders read (as torchgeo's fake-data
generators do): annotation.csv (file_id, feature_name, label, split), data/<split>/<feature_name>/<file_id>
and optional few_shot/<K>_shot.csv lists, with tiny generated images."""

from __future__ import annotations

from pathlib import Path

from fakes import write_image

# DoMars16k-like: file ids <CTX product>_CX<x>_CY<y>.png; class folders and Mars-Bench's integer labels
CLASSES = {"aec": 0, "cra": 1, "smo": 2}


def marsbench_like(
    root: Path, classes=CLASSES, counts=None, products: int = 3, naming: str = "ctx", shot_lists=()
) -> Path:
    """root/{annotation.csv, data/...}; counts[split][class] images (default train 6, val 2, test 4 per class),
    spread over `products` scenes per split. naming: "ctx" (DoMars16k-like) or "plain" (img<n>.png, no scene).
    shot_lists: K values for which few_shot/<K>_shot.csv lists the first K training images of each class
    (all of a smaller class) plus every val and test row, as Mars-Bench's lists do."""
    root = Path(root)
    counts = counts or {split: {c: n for c in classes} for split, n in (("train", 6), ("val", 2), ("test", 4))}
    rows, n = [], 0
    for s_no, (split, per_class) in enumerate(counts.items()):
        for name, label in classes.items():
            for i in range(per_class.get(name, 0)):
                p = i % products
                if naming == "ctx":
                    file_id = f"P{s_no}{p}_{10000 + 10 * label + p:06d}_XN_12S345W_CX{100 * i}_CY{7 + i}.png"
                else:
                    file_id = f"img{n:04d}.png"
                write_image(root / "data" / split / name / file_id, label, p)
                rows.append((file_id, name, label, split))
                n += 1
    write_annotation(root / "annotation.csv", rows)
    for k in shot_lists:
        picked, taken = [], {}
        for row in rows:
            if row[3] != "train":
                picked.append(row)
            elif taken.get(row[1], 0) < k:
                taken[row[1]] = taken.get(row[1], 0) + 1
                picked.append(row)
        write_annotation(root / "few_shot" / f"{k}_shot.csv", picked)
    return root


def write_annotation(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("file_id,feature_name,label,split\n" + "".join(f"{f},{c},{lab},{s}\n" for f, c, lab, s in rows))
