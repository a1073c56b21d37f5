#!/usr/bin/env bash
# Reproduces the reference results in results/ (hirise-regions.csv, aid-classes.csv, the transductive methods'
# rows of ctx-craters-transfer.csv and ctx-craters.csv) and their leaderboard.
# Resumable: run it again after an interruption. Episode counts per method are as docs/reproducing.md states.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_DATA_DIR="${BENCH_DATA_DIR:-../shared/data}"
bench=".venv/bin/bench"
F="--method protonet --method linear-probe --method simpleshot --method knn --method baseline-pp --method maml"
# The transductive methods (docs/transductive-methods.md): they also read their episode's unlabelled query features.
T="--method bd-cspn --method laplacianshot --method tim --method pt-map"
# SDFT's step-2 setting chosen per task on validation episodes (docs/tuning.md, "SDFT's second step").
declare -A TUNED=([hirise-regions]="sdft:fuse=0.5" [aid-classes]="sdft:mix=0.75")
# Into results/ (a user's runs go to runs/). Rows made by an earlier commit are kept (--reuse-stale) when
# everything else in their key matches; to check that this commit reproduces them, run into a new --out.
for task in hirise-regions aid-classes; do
    R="--quiet --task $task --out results/$task.csv --reuse-stale"
    $bench run $R $F --shots 1,5,10,20 --episodes 600
    $bench run $R $T --shots 1,5,10,20 --episodes 600
    $bench run $R --method sdft --method "${TUNED[$task]}" --shots 5,1 --episodes 600
    $bench run $R --method sdft --method "${TUNED[$task]}" --shots 10,20 --episodes 200
    $bench run $R --method sdft-no-step1 --method sdft-linear-head --shots 5 --episodes 600
    $bench run $R --method sdft-no-step1 --shots 1,10,20 --episodes 200
    $bench run $R --method sdft-linear-head --shots 1,10,20 --episodes 100
    # full fine-tuning, every core per episode (docs/methods-reference.md has its cost per K): 100 episodes
    # a K, in rising cost, so that an interrupted run has its cheap cells done
    $bench run $R --method finetune --shots 1,5,10,20 --episodes 100
done
# Reference rows that only the region task has: the base classifier (its classes are base classes) and
# protonet meta-trained on base-pool episodes, the tuned protonet for region transfer (docs/tuning.md).
R="--quiet --task hirise-regions --out results/hirise-regions.csv --reuse-stale"
$bench run $R --method base-classifier --method protonet:metatrain=true --shots 1,5,10,20 --episodes 600
# The CTX crater windows as 2-way episodes (the chain table's file, README), and the crater maps of the scene
# with protonet beside the transductive methods (results/ctx-craters-transductive.md; protonet's rows there are
# those of results/ctx-craters.csv, recomputed).
$bench run --quiet --task ctx-craters --ways 2 --out results/ctx-craters-transfer.csv --reuse-stale $T \
    --shots 1,5,10,20 --episodes 600
$bench craters run --method protonet $T --shots 5,20 --seeds 0-9 --quiet --reuse-stale \
    --out results/ctx-craters-transductive
files="results/hirise-regions.csv results/aid-classes.csv"
$bench leaderboard $files --format markdown --out results/leaderboard.md   # paired differences and ranks
$bench leaderboard $files --format summary --out results/summary.md        # the README's method x shots tables
$bench leaderboard $files results/ctx-craters-transfer.csv --format transductive --out results/transductive.md
