#!/usr/bin/env bash
# The MinAtar benchmark (issue 16): DITTO, D-GAIL, D-BC and BC at N_E in {1, 4, 16}, 3 seeds, per
# game, through `ditto_tf.sweep` (one collection + world model per game, shared by its 36 runs;
# the seeds are the agents'), with the shipped PPO experts, world-model data from the expert with
# 25% random actions (block `minatar`), each run evaluated in the true env (last 10 checkpoints x
# 10 full episodes). Resumable: finished stages, runs and evaluated checkpoints are skipped.
# Each stage and each run takes the heavy-job lock on its own, so other jobs interleave.
#
#   bash benchmarks/minatar_benchmark.sh OUT [GAME ...] [-- train.py flags]
#   e.g. bash benchmarks/minatar_benchmark.sh runs/minatar breakout freeway space_invaders
#        bash benchmarks/minatar_benchmark.sh /tmp/mb breakout -- --world_model.steps 1000   # smaller
#        MINATAR_EXPERTS=4 MINATAR_SEEDS=0 bash benchmarks/minatar_benchmark.sh /tmp/mb freeway    # a slice
#        MINATAR_BLOCKS="minatar vector" bash benchmarks/minatar_benchmark.sh /tmp/mg breakout -- \
#            --world_model.steps 10000 --agent.normalize_advantages true --agent.actor_grad both
#   The last is the grid as the world model's input with the settings that measured best on
#   Breakout (BENCHMARKS.md, "MinAtar", "On the grid"); MINATAR_BLOCKS defaults to "minatar small".
#
# Tables afterwards: python evaluate.py OUT/minatar_<game>/*-s* --out OUT/results
set -euo pipefail
OUT=$(realpath -m "$1"); shift
GAMES=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do GAMES+=("$1"); shift; done
[ $# -gt 0 ] && shift
# Flags for every train.py call. The world model learns from the world-model episodes only (as
# in imitation_quality.py), not from the max(N_E) expert train episodes too: N_E must be all the
# expert data an N_E run gets. A later `--world_model.train_on_expert true` overrides it.
EXTRA=(--world_model.train_on_expert false "$@")
[ ${#GAMES[@]} -gt 0 ] || GAMES=(breakout freeway space_invaders)
cd "$(dirname "$0")/.."
LOCK=${DITTO_HEAVY_LOCK:-/tmp/ditto_heavy.lock}
read -ra BLOCKS <<< "${MINATAR_BLOCKS:-minatar small}"
read -ra AGENTS <<< "${MINATAR_AGENTS:-ditto dgail dbc bc}"
read -ra EXPERTS <<< "${MINATAR_EXPERTS:-1 4 16}"
read -ra SEEDS <<< "${MINATAR_SEEDS:-0 1 2}"
RUNS=$(( ${#AGENTS[@]} * ${#EXPERTS[@]} * ${#SEEDS[@]} ))
for game in "${GAMES[@]}"; do
  env=minatar_${game//_/}
  sweep=(python -m ditto_tf.sweep --envs "$env" --configs "${BLOCKS[@]}" --out "$OUT"
         --agents "${AGENTS[@]}" --experts "${EXPERTS[@]}" --seeds "${SEEDS[@]}")
  t0=$(date +%s)
  flock "$LOCK" "${sweep[@]}" --stage shared -- "${EXTRA[@]}"
  echo "== $env shared stage (collect + world model): $(( $(date +%s) - t0 )) s"
  for ((i = 0; i < RUNS; i++)); do
    t1=$(date +%s)
    flock "$LOCK" "${sweep[@]}" --stage runs --shard "$i/$RUNS" --eval -- "${EXTRA[@]}"
    echo "== $env run $i/$RUNS: $(( $(date +%s) - t1 )) s"
  done
  python evaluate.py "$OUT/$env"/*-s* --out "$OUT/results/$env" --quiet
done
