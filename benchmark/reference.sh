#!/usr/bin/env bash
# Reproduces the reference results in results/ (hirise-regions.csv, aid-classes.csv) and their leaderboard.
# Resumable: run it again after an interruption. Episode counts per method are as the README states.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_DATA_DIR="${BENCH_DATA_DIR:-../shared/data}"
bench=".venv/bin/bench"
F="--method protonet --method linear-probe --method simpleshot --method knn --method baseline-pp --method maml"
S="--method sdft --method sdft-no-step1 --method sdft-linear-head"
# Into results/ (a user's runs go to runs/). Rows made by an earlier commit are kept (--reuse-stale) when
# everything else in their key matches; to check that this commit reproduces them, run into a new --out.
for task in hirise-regions aid-classes; do
    R="--quiet --task $task --out results/$task.csv --reuse-stale"
    $bench run $R $F $S --shots 5 --episodes 600
    $bench run $R $F --shots 1,10,20 --episodes 600
    $bench run $R --method sdft --method sdft-no-step1 --shots 1,10,20 --episodes 200
    $bench run $R --method finetune --shots 5 --episodes 10
    $bench run $R --method sdft-linear-head --shots 1,10,20 --episodes 100
done
files="results/hirise-regions.csv results/aid-classes.csv"
$bench leaderboard $files --format markdown --out results/leaderboard.md   # paired differences and ranks
$bench leaderboard $files --format summary --out results/summary.md        # the README's method x shots tables
