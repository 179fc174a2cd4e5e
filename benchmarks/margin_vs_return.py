"""DITTO's signal margin against its return: one row per evaluated DITTO run.

    python benchmarks/margin_vs_return.py RUN [RUN ...] --baselines RESULTS.csv [...] [--starts 256]

Each RUN is a DITTO run folder that `evaluate.py` has evaluated (`RUN/eval/results.csv`, as
`benchmarks/ditto_knobs.sh` leaves it) with its world model in `RUN/world_model`. Per run, the
margin of the world model (`ditto_tf.margin`: the eq.-8 reward the expert's own actions earn over
what random actions earn, from held-out expert states) is measured at the run's own
`agent.horizon`, for the run's own reward latent and form, so that it is the margin that run's
DITTO had to find. `--baselines` takes evaluation tables (`results.csv`) holding BC rows of the
same env and N_E: DITTO "fails" where it scores below BC by more than one SE of the difference
(the issue's definition). Prints a markdown table sorted by margin.
"""

from __future__ import annotations

import argparse
import csv
import os
import pathlib
import sys
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ditto_tf.errors import UserError, command  # noqa: E402


def read_rows(path: pathlib.Path) -> list[dict[str, Any]]:
    """The rows of an evaluation table, numbers as floats."""
    if not path.is_file():
        raise UserError(f"{path}: no evaluation table (run `python evaluate.py` on the run first)")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("return_mean", "return_se", "normalized", "expert", "random"):
            row[key] = float(row[key])
        row["n_expert"] = int(row["n_expert"])
    return rows


def margin_row(latent: str, form: str) -> str:
    """The `ditto_tf.margin.ROWS` key of a DITTO reward (forms apply to z only)."""
    from ditto_tf.margin import ROWS
    for name, (row_latent, row_form) in ROWS.items():
        if row_latent == latent and (latent != "stoch" or row_form == form):
            return name
    raise UserError(f"ditto.reward_latent {latent!r} / reward_form {form!r}: no margin row")


def measure_run(run: pathlib.Path, starts: int) -> dict[str, Any]:
    """DITTO's evaluated score in `run` and its world model's margin for that DITTO's reward."""
    from ditto_tf.runs import load_run_config
    from wm_action_sensitivity import report

    ditto = [r for r in read_rows(run / "eval" / "results.csv") if r["agent"] == "ditto"]
    if not ditto:
        raise UserError(f"{run / 'eval' / 'results.csv'}: no ditto row")
    config = load_run_config(run)
    row = margin_row(str(config.ditto.reward_latent), str(config.ditto.reward_form))
    margins = report(run, None, starts)
    return {"run": run, **ditto[0], "row": row, "margin": margins.margins[row]}


def verdict(ditto: dict[str, Any], bc: dict[str, Any] | None) -> str:
    """DITTO against BC by the benchmarks' rule (one SE of the difference)."""
    if bc is None:
        return "-"
    from ditto_tf.plots import at_least
    if at_least(ditto, bc):
        return "tie" if at_least(bc, ditto) else "win"
    return "fails"


def baselines(paths: list[pathlib.Path]) -> dict[tuple[str, int], dict[str, Any]]:
    """BC's row per (env, N_E). Two tables with a BC row for the same key are an error: pixel
    and vector runs of one env share the env id, and each must meet its own BC."""
    found: dict[tuple[str, int], tuple[pathlib.Path, dict[str, Any]]] = {}
    for path in paths:
        for r in read_rows(path):
            if r["agent"] != "bc":
                continue
            key = (r["env"], r["n_expert"])
            if key in found and found[key][0] != path:
                raise UserError(f"--baselines {found[key][0]} and {path}: both hold BC for "
                                f"{key[0]} at N_E {key[1]}; compare pixel and vector runs of one "
                                "env in separate invocations")
            found[key] = (path, r)
    return {key: r for key, (_, r) in found.items()}


@command()
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=pathlib.Path, help="evaluated DITTO run folders")
    parser.add_argument("--baselines", nargs="*", type=pathlib.Path, default=[],
                        help="results.csv files with the BC rows to compare against")
    parser.add_argument("--starts", type=int, default=256, help="held-out expert start states")
    args = parser.parse_args()
    bc = baselines(args.baselines)
    rows = sorted((measure_run(run, args.starts) for run in args.runs), key=lambda r: r["margin"])
    print("| run | env | N_E | reward | H | margin | DITTO return | expert-normalised | BC return "
          "| DITTO vs BC |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = bc.get((r["env"], r["n_expert"]))
        bc_text = f"{ref['return_mean']:.1f} ± {ref['return_se']:.1f}" if ref else "-"
        print(f"| {r['run'].name} | {r['env']} | {r['n_expert']} | {r['row']} | {r['horizon']} | "
              f"{r['margin']:+.1%} | {r['return_mean']:.1f} ± {r['return_se']:.1f} | "
              f"{r['normalized']:.2f} | {bc_text} | {verdict(r, ref)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
