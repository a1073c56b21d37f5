"""The episode protocol (`bench run`): every method on the same N-way K-shot episodes, one row per (method,
shots, episode), scored by benchmark/scoring.score_episode. How a method answers an episode (here, on Ray
workers or in its sandbox) is benchmark/runner.py's; the loop around it is benchmark/pipeline.py's."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from benchmark import answer_checks, runner
from benchmark.pipeline import Plan, Run, run
from benchmark.protocols import TaskProtocol
from benchmark.results import EPISODES, SCHEMA_VERSION, check_results_path, set_aside_path
from methods.devices import device_name
from methods.progress import SILENT, Progress
from tasks.handles import RowHandles


class Episodes(TaskProtocol):
    """A unit is one episode of a (method, shots) stream; runner.RunConfig holds the settings."""

    schema = EPISODES
    fresh_what = " of this run's methods and shots"

    def setup(self, progress: Progress) -> Path:
        config = self.config
        self.open_task(split=config.split)
        self.episode_sets = {
            k: self.task.episodes(config.n_way, k, config.n_query, config.episodes, config.seed) for k in config.shots
        }  # infeasible (N, K, Q) fails here, before any work
        check_results_path(self.out)  # an incompatible, unreadable or unwritable file fails before any work
        self.manifests = runner.Manifests(self.out.parent / "manifests", self.task, progress)
        return self.out

    def plans(self) -> list[Plan]:
        config, methods = self.config, self.methods
        del self.methods  # the plans hold them now, and the pipeline lets each go once it ran
        plans = []
        for (spec, method), cond in zip(methods, runner.conditions(self.task, config, [m for _, m in methods])):
            for k, episodes in self.episode_sets.items():
                measurement = {
                    "task": self.task.name,
                    "method": spec.label,
                    "shots": k,
                    "ways": config.n_way,
                    "queries": config.n_query,
                    "manifest": runner.stream_id(episodes),
                }
                plans.append(
                    Plan(spec, method, measurement, cond, list(range(len(episodes))), f"{spec.label} {k}-shot")
                )
        return plans

    def executor(self, progress: Progress):
        return runner.make_executor(self.config, self.cache, self.out, progress)

    def run_method(self, plans: list[Plan], run: Run) -> None:
        """Prepare the method once (here, in the driver, or in its sandbox), then answer each shots' pending
        episodes here or on the executor's workers; either way only this process writes rows. Where the method
        runs in this process, a few of the episodes it answered are answered again by a fresh process
        afterwards (check_answers_again)."""
        spec, config = plans[0].spec, self.config
        handles = RowHandles.of_table(self.task.table)
        prepared, kept = False, {}
        for plan in plans:
            if plan.done:
                run.progress.log(
                    f"{spec.label} {plan.k}-shot: {len(plan.done)} episodes already in {self.out}, "
                    f"{len(plan.pending)} to run"
                )
            if not plan.pending:
                continue
            if not prepared:
                self.prepare(plan, run, handles)
                prepared = True
            kept[plan.k] = dict.fromkeys(runner.episodes_to_check(plan.pending, config.seed, plan.k))
            self.answer(plan, run, handles, kept[plan.k])
        if prepared and answer_checks.checkable(run.executor):
            self.check_answers_again(plans, kept, handles, run)

    def prepare(self, plan: Plan, run: Run, handles: RowHandles) -> None:
        """Prepare the plan's method (runner.prepared_by); what it raises is the method's failure."""
        config, label = self.config, plan.spec.label
        started = time.perf_counter()
        with runner.blamed(label, "prepare"):
            runner.prepared_by(
                run.executor, plan.method, self.task, self.cache, config, config.seed, run.progress, handles
            )
        run.progress.log(
            f"{label}: prepared in {time.perf_counter() - started:.1f} s on {config.device} (rows "
            f"record {device_name(config.device)})"
        )

    def answer(self, plan: Plan, run: Run, handles: RowHandles, kept: dict) -> None:
        """Answer, score and append the plan's pending episodes; the scores of the episodes in `kept` go there."""
        episodes, config = self.episode_sets[plan.k], self.config
        rows, last_flush = [], time.perf_counter()
        batched = runner.supports_batches(plan.method) or bool(getattr(type(plan.method), "batched", False))
        common = run.provenance.columns()

        def flush():
            if rows:
                self.manifests.ensure(episodes)
                run.table.append(rows)
                rows.clear()

        with run.progress.bar(plan.what, len(plan.pending)) as advance, runner.saved_on_exit(flush):
            for i, result, seconds in runner.episode_results(
                plan.method,
                episodes,
                plan.pending,
                config.seed,
                self.task.class_names,
                plan.spec.label,
                run.executor,
                handles,
                kept,
            ):
                rows.append(
                    {
                        "schema": SCHEMA_VERSION,
                        **plan.key,
                        "seed": config.seed,
                        "episode": i,
                        **result,
                        "seconds": round(seconds, 6),
                        **common,
                        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                    }
                )
                advance(1)
                if (
                    len(rows) >= runner.FLUSH_EVERY_EPISODES and not batched
                ) or time.perf_counter() - last_flush > runner.FLUSH_EVERY_SECONDS:
                    flush()
                    last_flush = time.perf_counter()

    def check_answers_again(self, plans: list[Plan], kept: dict, handles: RowHandles, run: Run) -> None:
        """benchmark/answer_checks.py on the kept episodes (the last of each shots' and two drawn from the seed);
        where any scores differ, the rows of this run's measurements of the method (`plans`: not its rows of
        other ways, queries or streams) are set aside and it fails."""
        spec, method = plans[0].spec, plans[0].method
        sandboxed = not answer_checks.asks_again(run.executor)
        batched = bool(getattr(method, "batched", False)) if sandboxed else runner.supports_batches(method)
        requests, first = self.requests_again(method, kept, handles, batched, answer_checks.hows(method, run.executor))
        if not requests:
            return
        asked = answer_checks.Asked(spec, method, self.task, self.cache, self.config, handles)
        answers = answer_checks.answered_again(asked, self.config.seed, requests, run.executor, run.progress)
        changed = {"again": [], "alone": []}
        for (how, k, i), request in requests.items():
            scores = answers[(how, k, i)]
            if how == "again" and not answer_checks.same_answers(
                first[(k, i)], scores[0] if request["op"] == "batch" else scores
            ):
                changed[how].append((k, i))
            if how == "alone" and not answer_checks.same_alone(first[(k, i)], scores, self.config.device):
                changed[how].append((k, i))
        for how, found in changed.items():
            if found:
                k, i = found[0]
                moved = run.table.set_aside([p.measurement for p in plans if p.k in kept])
                checked = sum(key[0] == how for key in requests)
                rows = f"; its {moved} rows were moved to {set_aside_path(self.out)}"
                raise answer_checks.refused(spec.label, how, f"episode {i} at {k} shots", len(found), checked, rows)
        run.progress.log(
            f"{spec.label}: {len({key[1:] for key in requests})} episodes answered again"
            + ("" if sandboxed else " by a fresh process")
            + (", each query also on its own" if any(key[0] == "alone" for key in requests) else "")
            + ": the same answers"
        )

    def requests_again(self, method, kept: dict, handles: RowHandles, batched: bool, hows: list[str]):
        """({(how, shots, episode): what is asked again}, {(shots, episode): the scores answered in the run}):
        how "again", the episode as it was asked, and "alone", each query on its own."""
        from benchmark.sandbox import episode_request

        takes_classes = bool(getattr(method, "takes_classes", False))
        requests, first = {}, {}
        for how in hows:  # in their order: every episode's queries alone before any episode's whole query
            for k, chosen in kept.items():
                blind = self.episode_sets[k].blind(handles)
                for i, scores in chosen.items():
                    if scores is None:
                        continue
                    first[(k, i)] = scores
                    alone = how == "alone"
                    requests[(how, k, i)] = episode_request(blind, i, self.config.seed, batched, takes_classes, alone)
        return requests, first

    def finish(self, rows):
        rows.attrs["notes"] = self.task.notes()  # for the tables' header
        return rows


def run_benchmark(config: runner.RunConfig, progress: Progress = SILENT, failures: list | None = None):
    """Run (or resume) every method on the shared episodes; returns this run's rows. A method that fails raises
    MethodFailed; with a `failures` list (and not `config.stop_on_failure`) it is appended there instead and
    the other methods still run."""
    return run(Episodes(config), progress, failures)
