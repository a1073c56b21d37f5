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

`python -m benchmark.ctx_craters run` does all of it (the maps are `bench map`'s own code, in-process, so the
features are computed once); `python -m benchmark.ctx_craters scene --out DIR` writes the stacked scene,
the boxes and example POINTS.csv files for running `bench map` by hand; `python -m benchmark.ctx_craters
score --map DIR` scores a `bench map` output folder.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.mapping import binary_scores, smooth, write_points
from tasks.datasets.ctx_murray import CLASSES, DATASET, RIM_BAND, TRAIN_X, load_ctx, window_truth
from tasks.errors import UserError
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
    return {**main, "ambiguous": int((scored & ambiguous).sum()), "predicted_crater_fraction":
            float(predicted[scored].mean()), "strict_precision": strict["precision"],
            "strict_recall": strict["recall"], "strict_f1": strict["f1"]}


# ------------------------------------------------------------------------------------------------ commands


def write_scene(data_dir: Path, out: Path) -> Path:
    from PIL import Image

    scene, boxes = load_ctx(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ctx-scene.png"
    if not path.exists():
        Image.fromarray(scene).save(path)
    np.savetxt(out / "craters.txt", boxes, fmt="%.4f")
    return path


def cmd_scene(args) -> int:
    path = write_scene(Path(args.data_dir), Path(args.out))
    grid = WindowGrid(3744, 3744, args.window, args.stride)
    _, boxes = load_ctx(Path(args.data_dir))
    for k in args.shots:
        for seed in args.seeds:
            xy, labels = draw_points(grid, boxes, k, np.random.default_rng([seed, k]))
            write_points(Path(args.out) / f"points-k{k}-seed{seed}.csv", xy, labels)
    print(f"scene: {path}; POINTS files and craters.txt in {args.out}")
    return 0


def cmd_score(args) -> int:
    summary = json.loads((Path(args.map) / "summary.json").read_text())
    grid = WindowGrid(summary["scene_size"][1], summary["scene_size"][0], summary["window"], summary["stride"])
    if summary["scene_size"] != [3744, 3744]:
        raise UserError(f"{args.map} maps a {summary['scene_size']} scene, not the 3744 x 3744 CTX block")
    _, boxes = load_ctx(Path(args.data_dir))
    labels = np.load(Path(args.map) / "labels.npy")
    scores = score_labels(grid, boxes, labels, summary["classes"].index("crater"))
    print(json.dumps({"map": args.map, "smoothing": summary["smoothing"], **scores}, indent=2))
    if args.figure:
        scene, _ = load_ctx(Path(args.data_dir))
        outcome_figure(Path(args.figure), scene, grid, boxes, labels.ravel() == summary["classes"].index("crater"),
                       args.crop, args.size)
        print(f"figure: {args.figure}")
    return 0


OUTCOME_COLOURS = {"hit": (40, 200, 60), "false alarm": (230, 40, 40), "on a partial crater": (240, 150, 30),
                   "missed": (250, 230, 40)}


def outcome_figure(path: Path, scene: np.ndarray, grid: WindowGrid, boxes: np.ndarray, predicted: np.ndarray,
                   crop: list[int], size: int) -> None:
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
        cell = [(xe[c] - x0c) * scale, (ye[r] - y0c) * scale, (xe[c + 1] - x0c) * scale - 1,
                (ye[r + 1] - y0c) * scale - 1]
        if cell[2] < 0 or cell[3] < 0 or cell[0] > base.size[0] or cell[1] > base.size[1]:
            continue
        if predicted[i]:
            kind = "hit" if crater[i] else "on a partial crater" if ambiguous[i] else "false alarm"
            draw.rectangle(cell, fill=OUTCOME_COLOURS[kind] + (90,))
        elif crater[i]:
            draw.rectangle(cell, outline=OUTCOME_COLOURS["missed"] + (255,), width=2)
    for bx1, by1, bx2, by2 in boxes:
        draw.rectangle([(bx1 - x0c) * scale, (by1 - y0c) * scale, (bx2 - x0c) * scale, (by2 - y0c) * scale],
                       outline=(0, 230, 255, 255), width=1)
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
    out.save(path, optimize=True)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    from benchmark.stats import mean_ci

    records = []
    keys = ["method", "shots", "smoothing"]
    for key, g in frame.groupby(keys, sort=False):
        record = dict(zip(keys, key))
        record["seeds"] = len(g)
        for column in ("precision", "recall", "f1", "strict_f1"):
            mean, half = mean_ci(g[column]) if len(g) > 1 else (float(g[column].mean()), float("nan"))
            record[column], record[f"{column}_ci95"] = mean, half
        record["map_seconds"] = float(g["map_seconds"].median())
        record["first_map_seconds"] = float(g["map_seconds"].max())
        records.append(record)
    return pd.DataFrame(records)


def markdown(frame: pd.DataFrame, summary: pd.DataFrame, meta: dict) -> str:
    def pm(mean, half):
        return f"{100 * mean:.1f}" if not np.isfinite(half) else f"{100 * mean:.1f} ± {100 * half:.1f}"

    lines = [
        "# CTX craters: few-shot sliding-window mapping, scored against Robbins craters",
        "",
        f"Scene: the 3 x 3 Murray-Lab CTX tiles of `{DATASET}` stacked into 3744 x 3744 px (~95 m/px). "
        f"Windows of {meta['window']} px every {meta['stride']} px ({meta['windows']} windows), resized to "
        f"{meta['image_size']} px; base task `{meta['task']}`; backbone {meta['backbone']}.",
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
        f"rim band ({RIM_BAND[0]}-{RIM_BAND[1]} radii) of a larger crater. See `benchmark/ctx_craters.py`.",
        "",
        f"Smoothing `mrf`: Potts MRF over 8-neighbour windows, beta = {meta['beta']:g} (ICM). Values: crater-class "
        f"precision, recall and F1 in %, mean ± 95% CI (t) over {meta['n_seeds']} seeds of the K-window draw "
        f"(the methods' own seed, for pre-training and fitting, is fixed at {meta['method_seed']}; the CI of a "
        "single seed is not shown). Map s: wall seconds of one map (prepare + fit + classify all "
        "windows), median over seeds; max: the slowest map of the run. Both read the windows' features (SDFT: "
        "its step-1 checkpoint and activations) from the cache; the map that first computes them pays once "
        "for them (see docs/mapping.md). Measured on 2 CPU cores shared with other jobs.",
        "",
        "| method | K | smoothing | precision | recall | F1 | strict F1 | seeds | map s | max map s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, r in summary.iterrows():
        lines.append(f"| {r['method']} | {r['shots']} | {r['smoothing']} | {pm(r['precision'], r['precision_ci95'])} | "
                     f"{pm(r['recall'], r['recall_ci95'])} | {pm(r['f1'], r['f1_ci95'])} | "
                     f"{pm(r['strict_f1'], r['strict_f1_ci95'])} | {r['seeds']} | {r['map_seconds']:.1f} | "
                     f"{r['first_map_seconds']:.1f} |")
    from benchmark.stats import mean_ci

    paired = frame.pivot_table(index=["method", "shots", "seed"], columns="smoothing", values="f1").reset_index()
    if {"none", "mrf"} <= set(paired.columns):
        lines += ["", "Effect of smoothing, paired over the same draws: F1(mrf) - F1(none), points of %.", "",
                  "| method | K | F1 difference | seeds |", "|---|---:|---:|---:|"]
        for (method, k), g in paired.groupby(["method", "shots"], sort=False):
            diff = (g["mrf"] - g["none"]).dropna()
            if len(diff) > 1:
                mean, half = mean_ci(diff)
                lines.append(f"| {method} | {k} | {100 * mean:+.1f} ± {100 * half:.1f} | {len(diff)} |")
    base_rate = meta["positives"] / max(1, meta["positives"] + meta["negatives"])
    lines += ["", f"Chance reference: marking every scored window a crater gives precision {100 * base_rate:.1f}%, "
                  f"recall 100%, F1 {100 * 2 * base_rate / (1 + base_rate):.1f}%.", "",
              "Caveat: the Robbins catalogue stops at 1 km (~10 px); smaller craters are real craters that count "
              "as non-crater terrain here, so precision is a lower bound for 'finds craters' and an exact score "
              "for 'finds catalogued craters of window size'.", "",
              f"Per-seed rows: `{meta['csv']}`. Command: `{meta['command']}`", ""]
    return "\n".join(lines)


def cmd_run(args) -> int:
    import torch

    from benchmark.console import RichProgressReporter
    from benchmark.mapping import Scene, map_scene, read_points
    from benchmark.runner import MethodSpec
    from methods.cache import Cache
    from methods.features import thread_policy
    from methods.registry import method_info
    from tasks.registry import load_task

    data_dir = Path(args.data_dir)
    specs = [MethodSpec.parse(m) for m in args.method]
    for spec in specs:
        method_info(spec.name)
    work = Path(args.work)
    scene_path = write_scene(data_dir, work)
    pixels, boxes = load_ctx(data_dir)
    scene = Scene(str(scene_path), pixels)
    grid = WindowGrid(scene.height, scene.width, args.window, args.stride)
    task = load_task(args.task, data_dir)
    cache = Cache(args.cache_dir) if args.cache_dir else Cache()
    progress = RichProgressReporter(enabled=not args.quiet)
    crater, ambiguous = window_truth(grid, boxes)
    _, scored = regions(grid)
    meta = {"window": grid.window, "stride": grid.stride, "windows": grid.n, "image_size": args.image_size,
            "task": task.name, "backbone": args.backbone, "scored": int(scored.sum()),
            "positives": int((scored & crater).sum()), "ambiguous": int((scored & ambiguous).sum()),
            "negatives": int((scored & ~crater & ~ambiguous).sum()), "beta": args.beta,
            "n_seeds": len(args.seeds), "method_seed": args.method_seed, "csv": f"{args.out}.csv", "command": " ".join(["python -m benchmark.ctx_craters"] + sys.argv[1:])}
    out_csv = Path(f"{args.out}.csv")
    rows = [] if args.fresh or not out_csv.exists() else pd.read_csv(out_csv).to_dict("records")
    done = {(r["method"], int(r["shots"]), int(r["seed"]), r["smoothing"]) for r in rows}
    with thread_policy(args.threads or torch.get_num_threads()):
        for spec in specs:
            for k in args.shots:
                for seed in args.seeds:
                    if all((spec.label, k, seed, s) in done for s in ("none", "mrf")):
                        continue
                    points_path = work / f"points-k{k}-seed{seed}.csv"
                    xy, labels = draw_points(grid, boxes, k, np.random.default_rng([seed, k]))
                    write_points(points_path, xy, labels)
                    points = read_points(points_path, grid, list(CLASSES))
                    example = args.example and (spec.label, k, seed) == (specs[-1].label, max(args.shots), args.seeds[0])
                    started = time.perf_counter()
                    # the draw seed picks the labelled windows; the method's own seed (pre-training, e.g. SDFT's
                    # step 1) stays fixed, so every draw adapts the same pre-trained model
                    result = map_scene(spec, task, scene, grid, points, cache, args.backbone, args.image_size,
                                       args.method_seed,
                                       "none", None, work / f"map-{spec.label}-k{k}-seed{seed}" if example else None,
                                       progress, preview=1200)
                    seconds = time.perf_counter() - started
                    progress.log(f"{spec.label} K={k} seed {seed}: map in {seconds:.1f} s "
                                 f"({json.dumps(result.summary['timings'])})")
                    for smoothing, strength in (("none", None), ("mrf", args.beta)):
                        labels_grid = smooth(result.probabilities, smoothing, strength)
                        scores = score_labels(grid, boxes, labels_grid, CLASSES.index("crater"))
                        rows = [r for r in rows if (r["method"], int(r["shots"]), int(r["seed"]), r["smoothing"])
                                != (spec.label, k, seed, smoothing)]
                        rows.append({"method": spec.label, "shots": k, "seed": seed, "smoothing": smoothing,
                                     "strength": 0.0 if strength is None else strength, **scores,
                                     "method_seed": args.method_seed, "map_seconds": round(seconds, 2),
                                     "prepare_seconds": result.summary["timings"]["prepare_s"],
                                     "window": grid.window, "stride": grid.stride, "image_size": args.image_size})
                        progress.log(f"  smoothing {smoothing}: P {scores['precision']:.3f} R {scores['recall']:.3f} "
                                     f"F1 {scores['f1']:.3f} (strict F1 {scores['strict_f1']:.3f})")
                    out_csv.parent.mkdir(parents=True, exist_ok=True)
                    pd.DataFrame(rows).to_csv(out_csv, index=False)
    frame = pd.DataFrame(rows)
    order = {s.label: i for i, s in enumerate(specs)}
    smoothing_order = {"none": 0, "mrf": 1}
    frame = frame.sort_values(["method", "shots", "smoothing", "seed"], key=lambda c: c.map(lambda m: order.get(m, len(order))) if c.name ==
                              "method" else c.map(smoothing_order) if c.name == "smoothing" else c).reset_index(drop=True)
    frame.to_csv(out_csv, index=False)
    Path(f"{args.out}.md").write_text(markdown(frame, summarise(frame), meta))
    print(Path(f"{args.out}.md").read_text())
    return 0


def seed_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"--seeds must be integers >= 0 separated by commas, got {text!r}")
    return sorted(set(values))


def main(argv=None) -> int:
    from benchmark.cli import Parser, default_data_dir, int_list

    parser = Parser(prog="python -m benchmark.ctx_craters", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def common(p, grid=True):
        p.add_argument("--data-dir", default=default_data_dir())
        if grid:
            p.add_argument("--window", type=int, default=64)
            p.add_argument("--stride", type=int, default=32)
        p.add_argument("--debug", action="store_true")

    run = sub.add_parser("run", help="build samples, map, score; write OUT.csv and OUT.md")
    common(run)
    run.add_argument("--method", action="append", default=None)
    run.add_argument("--shots", type=int_list, default=[5, 20])
    run.add_argument("--seeds", type=seed_list, default=[0, 1, 2])
    run.add_argument("--beta", type=float, default=1.0)
    run.add_argument("--method-seed", type=int, default=0, help="the methods' seed (pre-training, fitting)")
    run.add_argument("--task", default="hirise-regions")
    run.add_argument("--backbone", default="efficientnet_lite0")
    run.add_argument("--image-size", type=int, default=128)
    run.add_argument("--work", default="/tmp/marsfsl-ctx-craters", help="scene PNG, POINTS files, example map")
    run.add_argument("--out", default="results/ctx-craters", help="writes OUT.csv and OUT.md")
    run.add_argument("--cache-dir", default=None)
    run.add_argument("--threads", type=int, default=None)
    run.add_argument("--fresh", action="store_true", help="ignore rows already in OUT.csv")
    run.add_argument("--example", action="store_true", help="write bench map's outputs for one map")
    run.add_argument("--quiet", action="store_true")
    run.set_defaults(handler=cmd_run)
    scene = sub.add_parser("scene", help="write the stacked scene, craters.txt and POINTS files for bench map")
    common(scene)
    scene.add_argument("--out", required=True)
    scene.add_argument("--shots", type=int_list, default=[5, 20])
    scene.add_argument("--seeds", type=seed_list, default=[0])
    scene.set_defaults(handler=cmd_scene)
    score = sub.add_parser("score", help="score a bench map output folder of the CTX scene")
    common(score, grid=False)
    score.add_argument("--map", required=True)
    score.add_argument("--figure", default=None, help="also draw hits, false alarms and misses into this PNG")
    score.add_argument("--crop", type=lambda t: [int(v) for v in t.split(",")], default=[1248, 0, 3744, 3744],
                       help="x0,y0,x1,y1 of the part to draw (default: the scored two thirds)")
    score.add_argument("--size", type=int, default=1000, help="longest side of the figure in pixels")
    score.set_defaults(handler=cmd_score)

    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser.parse_args(argv)
        if getattr(args, "command", None) == "run" and not args.method:
            args.method = ["protonet", "linear-probe"]
        return args.handler(args)
    except UserError as exc:
        if "--debug" in argv:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
