"""The scored mapping case: craters in a real CTX mosaic block, from K labelled windows per class.

Data (`DATA/ctx-murray-craters`): 3 x 3 tiles `resized_CTX/CTX{row}{col}_1248.png` of the Murray Lab CTX
mosaic (~95 m/px), stacked row by row into a 3744 x 3744 scene, and 577 Robbins craters (1-32 km) as boxes
`x1 y1 x2 y2` in that scene (`selected_craters_XY.txt`).

Protocol:
- The scene is mapped with windows of W pixels every S pixels (default 64 / 32); the map's pixel grid gives
  every window a cell (with S = W/2 its central half).
- Truth per window (`window_truth`): a window *is a crater* when a Robbins crater of comparable size
  (W/4 <= diameter <= W) has its centre in the window's cell, so each such crater is exactly one positive
  window and a map that marks it is a hit. A window is *ambiguous* (not scored in the main F1) when it is not
  a crater window but shows a labelled crater in part: it holds at least a quarter of a crater no larger than
  W (an off-cell, a too-small or a cut crater), it holds the centre of a larger crater, or it touches the rim
  band (0.8-1.2 radii) of a crater larger than W. Every other window is a *non-crater* window. Small craters
  below the Robbins limit (1 km, ~10 px) are unlabelled and count as non-crater terrain, as the catalogue
  does. The strict score counts ambiguous windows as non-craters.
- Samples: K crater windows and K non-crater windows drawn (seeded) from windows lying wholly in the left
  third of the scene (x < 1248); the map is scored on windows lying wholly in the right two thirds.
- Score: precision, recall and F1 of the crater class over scored windows, per method, K, seed and
  smoothing (none / MRF); mean and t-based 95% CI over seeds.

`bench craters run` does all of it (the maps are `bench map`'s own code, in-process, so the features are
computed once); `bench craters scene --out DIR` writes the stacked scene, the boxes and example POINTS.csv
files for running `bench map` by hand; `bench craters score --map DIR` scores a `bench map` output folder
(benchmark/commands/craters.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.columns import CRATER_COLUMNS, WEIGHTS_COLUMNS, names
from benchmark.results import Schema
from benchmark.scoring import binary_scores
from benchmark.stats import paired_difference, summarize
from benchmark.stats import pm as stats_pm
from common.errors import UserError
from common.files import atomic_output
from tasks.datasets.ctx_murray import CLASSES, DATASET, RIM_BAND, TRAIN_X, load_ctx, window_truth
from tasks.windows import WindowGrid


def regions(grid: WindowGrid) -> tuple[np.ndarray, np.ndarray]:
    """(train, scored) bool per window: wholly left of TRAIN_X, wholly right of it."""
    x0, _ = grid.origins()
    return x0 + grid.window <= TRAIN_X, x0 >= TRAIN_X


def draw_points(grid: WindowGrid, boxes: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """K crater and K non-crater windows from the training third: (2K, 2) window centres and labels."""
    crater, ambiguous = window_truth(grid, boxes)
    train, _ = regions(grid)
    pools = {"crater": np.flatnonzero(train & crater), "non-crater": np.flatnonzero(train & ~crater & ~ambiguous)}
    centres, labels = [], []
    for name in CLASSES:
        if len(pools[name]) < k:
            raise UserError(f"only {len(pools[name])} {name} windows in the training third; lower K")
        chosen = np.sort(rng.choice(pools[name], size=k, replace=False))
        centres.append(grid.centres()[chosen])
        labels += [name] * k
    return np.concatenate(centres), labels


def score_labels(grid: WindowGrid, boxes: np.ndarray, labels: np.ndarray, crater_class: int) -> dict:
    """Main (ambiguous windows not scored) and strict (ambiguous = non-crater) scores on the right two thirds."""
    crater, ambiguous = window_truth(grid, boxes)
    _, scored = regions(grid)
    predicted = labels.ravel() == crater_class
    main = binary_scores(predicted, crater, scored & ~ambiguous)
    strict = binary_scores(predicted, crater, scored)
    return {
        **main,
        "ambiguous": int((scored & ambiguous).sum()),
        "predicted_crater_fraction": float(predicted[scored].mean()),
        "strict_precision": strict["precision"],
        "strict_recall": strict["recall"],
        "strict_f1": strict["f1"],
    }


# ------------------------------------------------------------------------------------------------ commands


def write_scene(data_dir: Path, out: Path) -> Path:
    from PIL import Image

    scene, boxes = load_ctx(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ctx-scene.png"
    if not path.exists():
        with atomic_output(path) as tmp:
            Image.fromarray(scene).save(tmp)
    with atomic_output(out / "craters.txt") as tmp:
        np.savetxt(tmp, boxes, fmt="%.4f")
    return path


OUTCOME_COLOURS = {
    "hit": (40, 200, 60),
    "false alarm": (230, 40, 40),
    "on a partial crater": (240, 150, 30),
    "missed": (250, 230, 40),
}


def outcome_figure(
    path: Path,
    scene: np.ndarray,
    grid: WindowGrid,
    boxes: np.ndarray,
    predicted: np.ndarray,
    crop: list[int],
    size: int,
) -> None:
    """PNG of a part of the scene: cells of predicted crater windows coloured by outcome (hit, false alarm,
    ambiguous), missed crater windows outlined, Robbins boxes in cyan."""
    from PIL import Image, ImageDraw

    x0c, y0c, x1c, y1c = crop
    scale = size / max(x1c - x0c, y1c - y0c)
    base = Image.fromarray(scene[y0c:y1c, x0c:x1c]).convert("RGB")
    base = base.resize((round((x1c - x0c) * scale), round((y1c - y0c) * scale)), Image.Resampling.BILINEAR)
    tint = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(tint)
    crater, ambiguous = window_truth(grid, boxes)
    xe, ye = grid.cell_edges("x"), grid.cell_edges("y")
    ny, nx = grid.shape
    for i in range(grid.n):
        r, c = divmod(i, nx)
        cell = [
            (xe[c] - x0c) * scale,
            (ye[r] - y0c) * scale,
            (xe[c + 1] - x0c) * scale - 1,
            (ye[r + 1] - y0c) * scale - 1,
        ]
        if cell[2] < 0 or cell[3] < 0 or cell[0] > base.size[0] or cell[1] > base.size[1]:
            continue
        if predicted[i]:
            kind = "hit" if crater[i] else "on a partial crater" if ambiguous[i] else "false alarm"
            draw.rectangle(cell, fill=OUTCOME_COLOURS[kind] + (90,))
        elif crater[i]:
            draw.rectangle(cell, outline=OUTCOME_COLOURS["missed"] + (255,), width=2)
    for bx1, by1, bx2, by2 in boxes:
        draw.rectangle(
            [(bx1 - x0c) * scale, (by1 - y0c) * scale, (bx2 - x0c) * scale, (by2 - y0c) * scale],
            outline=(0, 230, 255, 255),
            width=1,
        )
    image = Image.alpha_composite(base.convert("RGBA"), tint).convert("RGB")
    legend = Image.new("RGB", (image.size[0], 22), (255, 255, 255))
    ldraw = ImageDraw.Draw(legend)
    x = 4
    for name, colour in list(OUTCOME_COLOURS.items()) + [("Robbins crater", (0, 200, 230))]:
        ldraw.rectangle([x, 6, x + 10, 16], fill=colour)
        ldraw.text((x + 14, 5), name, fill=(0, 0, 0))
        x += 20 + int(ldraw.textlength(name))
    out = Image.new("RGB", (image.size[0], image.size[1] + legend.size[1]), (255, 255, 255))
    out.paste(image, (0, 0))
    out.paste(legend, (0, image.size[1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        out.save(tmp, optimize=True)


# The per-seed rows of `bench craters run` (results/ctx-craters.csv), appended under benchmark.results' lock.
CRATERS = Schema(
    name="crater map scores",
    version=6,
    columns=CRATER_COLUMNS,
    # task and source: what the methods pre-train on, as asked (`--task`, `--source`)
    measurement=("task", "source", "method", "shots", "smoothing", "strength"),
    conditions=(
        *names("data scene backbone image_size preprocessing method_version config method_seed window stride device"),
        *WEIGHTS_COLUMNS,
    ),
    unit="seed",
    unit_fractions=(
        "precision",
        "recall",
        "f1",
        "predicted_crater_fraction",
        "strict_precision",
        "strict_recall",
        "strict_f1",
    ),
    counts={
        "shots": 1,
        "seed": 0,
        "tp": 0,
        "fp": 0,
        "fn": 0,
        "positives": 0,
        "scored": 0,
        "ambiguous": 0,
        "method_seed": 0,
        "window": 1,
        "stride": 1,
        "image_size": 1,
        "method_version": 0,
    },
    flags=("transductive", "isolated"),
    seconds=("map_seconds", "prepare_seconds"),
)


def summarize_craters(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean ± 95% CI over seeds per (method, shots, smoothing), with the median and slowest map times."""
    return summarize(
        frame,
        ["method", "shots", "smoothing"],
        ("precision", "recall", "f1", "strict_f1"),
        count="seeds",
        extra={
            "map_seconds": ("map_seconds", "median"),
            "first_map_seconds": ("map_seconds", "max"),
            "transductive": ("transductive", "max"),
        },
    )


def markdown(frame: pd.DataFrame, summary: pd.DataFrame, meta: dict) -> str:
    from benchmark.leaderboard import transductive_note

    lines = _setting_paragraphs(meta) + _summary_table(summary) + _smoothing_effect(frame)
    if summary["transductive"].astype(bool).any():
        lines += ["", transductive_note("all the scene's windows")]
    lines += _closing_paragraphs(meta)
    return "\n".join(lines)


def _setting_paragraphs(meta: dict) -> list[str]:
    """The title and what was mapped, how windows are labelled and what the values are."""
    return [
        "# CTX craters: few-shot sliding-window mapping, scored against Robbins craters",
        "",
        f"Scene: the 3 x 3 Murray-Lab CTX tiles of `{DATASET}` stacked into 3744 x 3744 px (~95 m/px). "
        f"Windows of {meta['window']} px every {meta['stride']} px ({meta['windows']} windows), resized to "
        f"{meta['image_size']} px; base task `{meta['task']}`"
        + (f" (pre-training base pool: `--source {meta['source']}`)" if meta.get("source") else "")
        + f"; backbone {meta['backbone']}.",
        "",
        f"Samples: K crater and K non-crater windows drawn per seed from windows wholly in the left third "
        f"(x < {TRAIN_X}); scored on the {meta['scored']} windows wholly in the right two thirds: "
        f"{meta['positives']} crater windows, {meta['negatives']} non-crater windows, {meta['ambiguous']} "
        "ambiguous windows (not scored in P/R/F1; counted as non-crater in strict F1).",
        "",
        f"Rule: a window is a crater window when a Robbins crater with diameter between W/4 and W "
        f"({meta['window'] / 4:g}-{meta['window']} px) has its centre in the window's cell (the part of the "
        "scene the map gives to that window; with stride W/2 its central half). Ambiguous: not a crater window "
        "but holds a quarter or more of a crater no larger than W, the centre of a larger crater, or part of the "
        f"rim band ({RIM_BAND[0]}-{RIM_BAND[1]} radii) of a larger crater. See `benchmark/mapping/craters.py`.",
        "",
        f"Smoothing `mrf`: Potts MRF over 8-neighbour windows, beta = {meta['beta']:g} (ICM). Values: crater-class "
        f"precision, recall and F1 in %, mean ± 95% CI (t) over {meta['n_seeds']} seeds of the K-window draw "
        f"(the methods' own seed, for pre-training and fitting, is fixed at {meta['method_seed']}; the CI of a "
        "single seed is not shown). Map s: wall seconds of one map (prepare + fit + classify all "
        "windows), median over seeds; max: the slowest map of the run. Both read the windows' features (SDFT: "
        "its step-1 checkpoint and activations) from the cache; the map that first computes them pays once "
        "for them (see docs/mapping.md). Measured on 2 CPU cores shared with other jobs.",
    ]


def _summary_table(summary: pd.DataFrame) -> list[str]:
    """One line per method, K and smoothing: the crater class's scores and the time of a map."""
    from benchmark.leaderboard import marked

    def pm(mean, half):  # one seed: no CI to show
        return stats_pm(mean, half, digits=1)

    lines = [
        "",
        "| method | K | smoothing | precision | recall | F1 | strict F1 | seeds | map s | max map s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, r in summary.iterrows():
        lines.append(
            f"| {marked(r['method'], r['transductive'])} | {r['shots']} | {r['smoothing']} | {pm(r['precision'], r['precision_ci95'])} | "
            f"{pm(r['recall'], r['recall_ci95'])} | {pm(r['f1'], r['f1_ci95'])} | "
            f"{pm(r['strict_f1'], r['strict_f1_ci95'])} | {r['seeds']} | {r['map_seconds']:.1f} | "
            f"{r['first_map_seconds']:.1f} |"
        )
    return lines


def _smoothing_effect(frame: pd.DataFrame) -> list[str]:
    """F1(mrf) - F1(none) paired over the same draws; nothing when the run has not both smoothings."""
    lines = []
    paired = frame.pivot_table(index=["method", "shots", "seed"], columns="smoothing", values="f1").reset_index()
    if {"none", "mrf"} <= set(paired.columns):
        lines += [
            "",
            "Effect of smoothing, paired over the same draws: F1(mrf) - F1(none), points of %.",
            "",
            "| method | K | F1 difference | seeds |",
            "|---|---:|---:|---:|",
        ]
        for (method, k), g in paired.groupby(["method", "shots"], sort=False):
            mean, half, n = paired_difference(g["mrf"], g["none"])
            if n > 1:
                lines.append(f"| {method} | {k} | {stats_pm(mean, half, signed=True, digits=1)} | {n} |")
    return lines


def _closing_paragraphs(meta: dict) -> list[str]:
    """The chance reference, the catalogue's caveat and where the rows and the command are."""
    base_rate = meta["positives"] / max(1, meta["positives"] + meta["negatives"])
    return [
        "",
        f"Chance reference: marking every scored window a crater gives precision {100 * base_rate:.1f}%, "
        f"recall 100%, F1 {100 * 2 * base_rate / (1 + base_rate):.1f}%.",
        "",
        "Caveat: the Robbins catalogue stops at 1 km (~10 px); smaller craters are real craters that count "
        "as non-crater terrain here, so precision is a lower bound for 'finds craters' and an exact score "
        "for 'finds catalogued craters of window size'.",
        "",
        f"Per-seed rows: `{meta['csv']}`. Command: `{meta['command']}`",
        "",
    ]
