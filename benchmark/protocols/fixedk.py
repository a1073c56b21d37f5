"""The fixed-K protocol (`bench fixedk`): K images per class, the whole test pool, once per seed; one row per
(method, shots, seed), scored by benchmark/scoring.score_fixed_k (weighted F1 as Mars-Bench computes it).
The unit of work, a seed, is benchmark/fixedk.run_fixed_k's; the loop around it is benchmark/pipeline.py's."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from benchmark import fixedk, runner
from benchmark.pipeline import Plan, Run, run
from benchmark.protocols import TaskProtocol
from benchmark.results import check_results_path
from methods.progress import SILENT, Progress
from tasks.protocols import PROTOCOL_VERSION, fixed_k_draw, fixed_k_pools, pretraining_pool


class FixedK(TaskProtocol):
    """A unit is one seed's draw of a (method, shots); fixedk.FixedKConfig holds the settings."""

    schema = fixedk.FIXED_K

    def setup(self, progress: Progress) -> Path:
        config = self.config
        self.open_task()
        self.pools = fixed_k_pools(self.task)  # once for every method and shots
        fixedk.check_shots_feasible(self.task, config.shots, config.cap, self.pools)
        check_results_path(self.out, fixedk.FIXED_K)
        return self.out

    def plans(self) -> list[Plan]:
        config, task, methods = self.config, self.task, self.methods
        del self.methods  # the plans hold them now, and the pipeline lets each go once it ran
        return [
            Plan(
                spec,
                method,
                {"protocol": PROTOCOL_VERSION, "task": task.name, "method": spec.label, "shots": k},
                {**cond, "draw": fixed_k_draw(task, k, config.cap).draw},
                list(config.seeds),
                f"{spec.label} {k}-shot",
            )
            for (spec, method), cond in zip(methods, runner.conditions(task, config, [m for _, m in methods]))
            for k in config.shots
        ]

    def executor(self, progress: Progress):
        return runner.make_executor(self.config, self.cache, self.out, progress)

    def run_method(self, plans: list[Plan], run: Run) -> None:
        for plan in plans:
            self.run_seeds(plan, run)

    def run_seeds(self, plan: Plan, run: Run) -> None:
        """Prepare the method and run its pending seeds at the plan's shots: one row per seed, appended at once."""
        label, k, pending = plan.spec.label, plan.k, plan.pending
        if plan.done:
            run.progress.log(
                f"{label} {k}-shot: {fixedk.seeds(len(plan.done))} already in {self.out}, {len(pending)} to run"
            )
        if not pending:
            return
        started = time.perf_counter()
        with runner.blamed(label, "the fixed-K protocol", f" at {k} shots"):
            results = fixedk.run_fixed_k(
                self.task,
                plan.method,
                k,
                pending,
                self.cache,
                self.config,
                pools=self.pools,
                executor=run.executor,
                progress=run.progress,
                label=label,
                spec=plan.spec,
            )
        made = {**run.provenance.columns(), "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}
        run.table.append([{"schema": fixedk.SCHEMA_VERSION, **plan.key, **result, **made} for result in results])
        run.progress.log(f"{label} {k}-shot: {fixedk.seeds(len(pending))} in {time.perf_counter() - started:.1f} s")

    def finish(self, rows):
        rows.attrs["notes"] = [pretraining_pool(self.task, self.pools), *self.task.notes()]  # for the tables' header
        return rows


def run_fixedk_benchmark(config: fixedk.FixedKConfig, progress: Progress = SILENT, failures: list | None = None):
    """Run (or resume) every method at every shots on the seeds; returns the rows of this configuration. A failing
    method raises MethodFailed, or with a `failures` list is appended there while the others run."""
    return run(FixedK(config), progress, failures)
