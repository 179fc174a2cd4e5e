#!/usr/bin/env bash
# DITTO's knobs on one world model: a shared stage (collect + world model), then one DITTO run
# per row over its data and world model, each evaluated by the protocol (sampled actions, the
# last K checkpoints x E rollouts). Resumable: finished phases and evaluated checkpoints are
# skipped on a re-run. Every row starts from OUT/shared/config.yaml, written by the first
# invocation on OUT: reusing OUT with other shared flags keeps that first invocation's value of
# every key the new flags leave unset, so pass such keys explicitly in the row.
#
#   flock /tmp/ditto_heavy.lock bash benchmarks/ditto_knobs.sh OUT "BLOCKS" "SHARED FLAGS" \
#       "row1: --flag v ..." "row2: ..."
#
# e.g. bash benchmarks/ditto_knobs.sh /tmp/knobs "cartpole vector" "--expert.folder ../shared/zoo" \
#          "defaults:" "normadv: --agent.normalize_advantages true"
set -euo pipefail
OUT=$(realpath -m "$1"); BLOCKS=$2; SHARED=$3; shift 3
cd "$(dirname "$0")/.."
# shellcheck disable=SC2086
run() { python train.py --configs $BLOCKS --logdir "$1" $SHARED "${@:2}"; }
t0=$(date +%s)
run "$OUT/shared" --phase collect
run "$OUT/shared" --phase world_model
echo "shared stage: $(( $(date +%s) - t0 )) s"
for row in "$@"; do
  name=${row%%:*}; flags=${row#*:}
  dir="$OUT/$name"; mkdir -p "$dir"
  ln -sfn "$OUT/shared/data" "$dir/data"
  [ -e "$dir/world_model" ] || cp -r "$OUT/shared/world_model" "$dir/world_model"
  [ -e "$dir/config.yaml" ] || cp "$OUT/shared/config.yaml" "$dir/config.yaml"
  t1=$(date +%s)
  # shellcheck disable=SC2086
  run "$dir" --phase ditto $flags
  python evaluate.py "$dir" --agents ditto --reference-episodes 50 > "$dir/eval.txt"
  echo "== $name ($flags): $(( $(date +%s) - t1 )) s"; grep -E "^\| (ditto|DITTO)" "$dir/eval.txt" || tail -5 "$dir/eval.txt"
done
