"""The crater-map protocol (`bench craters run`): per method, shots and draw seed, K labelled windows per class
from the training third of the CTX block, the whole block mapped (benchmark/mapping/map.map_scene) and the
scored two thirds scored with and without MRF smoothing (benchmark/mapping/craters.score_labels); one row per
(method, shots, smoothing, seed). The loop around a map is benchmark/pipeline.py's."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.mapping.craters import CLASSES, CRATERS, draw_points, regions, score_labels, write_scene
from benchmark.pipeline import Plan, Protocol, Run
from benchmark.provenance import method_conditions
from benchmark.results import check_results_path
from benchmark.runner import BenchConfig
from benchmark.scoring import MethodFailed
from common.errors import UserError
from common.settings import DEFAULTS
from methods.progress import Progress


@dataclass
class CratersConfig(BenchConfig):
    """`bench craters run`'s settings; `out` is the stem: rows in OUT.csv, the table in OUT.md."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # draws of the labelled windows
    window: int = 64
    stride: int = 32
    beta: float = 1.0  # the MRF's weight for the smoothed rows
    method_seed: int = 0  # the methods' own seed (pre-training, fitting), the same for every draw
    work: Path = Path("/tmp/marsfsl-ctx-craters")  # scene PNG, POINTS files, the example map
    example: bool = False  # write bench map's outputs for one map

    def results_path(self) -> Path:
        return Path(f"{self.out}.csv")

    @property
    def smoothings(self) -> tuple:
        return ("none", 0.0), ("mrf", float(self.beta))


class Craters(Protocol):
    """A unit is one draw seed of a (method, shots); one map of it gives the rows of every smoothing."""

    schema = CRATERS

    def setup(self, progress: Progress) -> Path:
        from methods.cache import Cache

        config = self.config
        self.cache = Cache(config.cache_dir) if config.cache_dir else Cache()
        self.methods = self.created_methods()  # before any work
        out_csv = config.results_path()
        try:
            out_csv.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--out {config.out}: its folder cannot be created ({exc.strerror})") from None
        check_results_path(out_csv, CRATERS)
        self.load_scene()
        self.load_task()
        return out_csv

    def created_methods(self) -> list:
        """Each --method created here, or under --isolate described by a sandboxed process (no code of it runs
        in this process), which sees none of the data, work, results and cache folders (`self.hidden`)."""
        from methods.registry import create_method

        config = self.config
        self.hidden = None
        if not config.isolate:
            return [create_method(spec.name, **spec.options) for spec in config.methods]
        from benchmark.mapping.isolated import described, hidden_folders

        self.hidden = hidden_folders(config.data_dir, config.work, config.results_path().parent, self.cache.root)
        return [described(spec, self.cache, self.hidden, config.device) for spec in config.methods]

    def load_scene(self) -> None:
        from benchmark.mapping.scene import Scene
        from tasks.datasets.ctx_murray import load_ctx
        from tasks.windows import WindowGrid

        config = self.config
        self.scene_path = write_scene(Path(config.data_dir), Path(config.work))
        pixels, self.boxes = load_ctx(Path(config.data_dir))
        self.scene = Scene(str(self.scene_path), pixels)
        self.grid = WindowGrid(self.scene.height, self.scene.width, config.window, config.stride)

    def load_task(self) -> None:
        from tasks.datasets.ctx_murray import tile_paths
        from tasks.registry import load_task

        config = self.config
        # a source must not hold the scene or its tiles (by file content)
        self.task = load_task(
            config.task,
            Path(config.data_dir),
            source=config.source,
            keep_out=[*tile_paths(Path(config.data_dir)), self.scene_path],
            image_size=config.image_size,
            source_disjoint=config.source_disjoint,
        )
        self.task_name = (self.task.plain or self.task).name

    def plans(self) -> list[Plan]:
        """A row's key: what was asked (task, source, method, K, smoothing), what else determines it (as bench
        run's rows: provenance.method_conditions; and the scene, grid and methods' seed), and the draw's seed."""
        from tasks.datasets.ctx_murray import scene_identity

        config, methods = self.config, self.methods
        del self.methods
        scene_id, plans = scene_identity(Path(config.data_dir)), []
        conditions = method_conditions(
            self.task, config.backbone, config.image_size, config.device, methods, config.isolate
        )
        for spec, method, cond in zip(config.methods, methods, conditions):
            for k in config.shots:
                for smoothing, strength in config.smoothings:
                    measurement = {
                        "task": self.task_name,
                        "source": cond["source"],
                        "method": spec.label,
                        "shots": k,
                        "smoothing": smoothing,
                        "strength": strength,
                    }
                    kept = {
                        **{c: cond[c] for c in CRATERS.conditions if c in cond},
                        "scene": scene_id,
                        "method_seed": config.method_seed,
                        "window": self.grid.window,
                        "stride": self.grid.stride,
                    }
                    plans.append(
                        Plan(
                            spec,
                            method,
                            measurement,
                            kept,
                            list(config.seeds),
                            f"{spec.label} K={k} smoothing {smoothing}",
                        )
                    )
        self.source = plans[0].measurement["source"] if plans else ""
        return plans

    def run_method(self, plans: list[Plan], run: Run) -> None:
        for k in self.config.shots:
            of_k = {p.measurement["smoothing"]: p for p in plans if p.k == k}
            for seed in self.config.seeds:
                if all(seed in p.done for p in of_k.values()):
                    continue
                run.table.append(self.map_rows(plans[0].spec, k, seed, of_k, run))

    def map_rows(self, spec, k: int, seed: int, of_k: dict[str, Plan], run: Run) -> list[dict]:
        """Draw the seed's labelled windows, map the scene, and score the map under each smoothing: its rows."""
        from benchmark.mapping.map import map_scene
        from benchmark.mapping.options import MapOptions
        from benchmark.mapping.points import read_points, write_points

        config, grid = self.config, self.grid
        points_path = Path(config.work) / f"points-k{k}-seed{seed}.csv"
        xy, labels = draw_points(grid, self.boxes, k, np.random.default_rng([seed, k]))
        write_points(points_path, xy, labels)
        points = read_points(points_path, grid, list(CLASSES))
        example = config.example and (spec.label, k, seed) == (
            config.methods[-1].label,
            max(config.shots),
            config.seeds[0],
        )
        started = time.perf_counter()
        # the draw seed picks the labelled windows; the method's own seed (pre-training, e.g. SDFT's step 1)
        # stays fixed, so every draw adapts the same pre-trained model
        settings = DEFAULTS.replace(
            backbone=config.backbone, image_size=config.image_size, seed=config.method_seed, device=config.device
        )
        out = Path(config.work) / f"map-{spec.label}-k{k}-seed{seed}" if example else None
        try:
            result = map_scene(
                spec,
                self.task,
                self.scene,
                grid,
                points,
                self.cache,
                settings,
                MapOptions(out=out, preview=1200, check=seed == config.seeds[0]),  # in-process: a fresh process per K
                run.progress,
                hidden=self.hidden,
            )
        except MethodFailed as exc:  # the map knows its method, not which draw of the run it is
            raise exc.at(f" at K={k}, draw seed {seed}") from None
        seconds = time.perf_counter() - started
        run.progress.log(
            f"{spec.label} K={k} seed {seed}: map in {seconds:.1f} s ({json.dumps(result.summary['timings'])})"
        )
        return [
            {
                **of_k[smoothing].key,
                "seed": seed,
                **scores,
                "map_seconds": round(seconds, 2),
                "prepare_seconds": result.summary["timings"]["prepare_s"],
                "git_commit": run.provenance.commit,
            }
            for smoothing, strength, scores in smoothed_scores(
                result.probabilities, grid, self.boxes, config.smoothings, run.progress
            )
        ]

    def meta(self) -> dict:
        """What the table's header says about the run (benchmark/mapping/craters.markdown)."""
        from methods.backbones import backbone_name
        from tasks.datasets.ctx_murray import window_truth

        config, grid = self.config, self.grid
        crater, ambiguous = window_truth(grid, self.boxes)
        _, scored = regions(grid)
        return {
            "window": grid.window,
            "stride": grid.stride,
            "windows": grid.n,
            "image_size": config.image_size,
            "task": self.task_name,
            "source": self.source,
            "backbone": backbone_name(config.backbone),
            "scored": int(scored.sum()),
            "positives": int((scored & crater).sum()),
            "ambiguous": int((scored & ambiguous).sum()),
            "negatives": int((scored & ~crater & ~ambiguous).sum()),
            "beta": config.beta,
            "n_seeds": len(config.seeds),
            "method_seed": config.method_seed,
            "csv": str(config.results_path()),
            "command": " ".join(["bench"] + sys.argv[1:]),
        }


def smoothed_scores(probabilities, grid, boxes, smoothings, progress):
    """(smoothing, strength, score_labels' scores) of one map under each smoothing."""
    from benchmark.mapping.smoothing import smooth

    out = []
    for smoothing, strength in smoothings:
        labels_grid = smooth(probabilities, smoothing, strength if smoothing != "none" else None)
        scores = score_labels(grid, boxes, labels_grid, CLASSES.index("crater"))
        progress.log(
            f"  smoothing {smoothing}: P {scores['precision']:.3f} R {scores['recall']:.3f} "
            f"F1 {scores['f1']:.3f} (strict F1 {scores['strict_f1']:.3f})"
        )
        out.append((smoothing, strength, scores))
    return out
