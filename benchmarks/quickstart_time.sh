#!/usr/bin/env bash
# Wall time of the README's quickstart on a "fresh machine": empty run directory and an empty
# expert cache (so the PPO expert is trained here with rl-zoo3's hyperparameters, as a new user's
# first run does). Prints the total, the per-phase times (LOGDIR/timings.json) and the results.
#
#   flock /tmp/ditto_heavy.lock bash benchmarks/quickstart_time.sh [LOGDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
LOGDIR=${1:-/tmp/ditto_quickstart}
CACHE="$LOGDIR.expert_cache"   # emptied first: no trained expert in it
rm -rf "$LOGDIR" "$CACHE"
export TF_CPP_MIN_LOG_LEVEL=2
start=$(date +%s.%N)
python train.py --configs quickstart --logdir "$LOGDIR" --expert.cache "$CACHE"
end=$(date +%s.%N)
python - "$LOGDIR" "$start" "$end" <<'PY'
import json, pathlib, sys
logdir, start, end = pathlib.Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
total = end - start
timings = json.loads((logdir / "timings.json").read_text())
print(f"\nquickstart wall time: {total:.0f} s = {total / 60:.1f} min (target: under 20 min)")
print("per phase: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
print(f"outside the phases (imports, start-up): {total - sum(timings.values()):.0f} s")
PY
