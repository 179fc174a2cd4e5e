"""Evaluation protocol (paper section 4): true-env returns of the last K agent checkpoints.

Protocol (Agarwal et al. 2021, as the paper reports it): for each agent, the last
`eval.checkpoints` (K, default 10) checkpoints, each playing `eval.episodes` (E, default 20)
rollouts in the real environment, vectorised over `eval.envs` envs; Atari games are played to the
real game over with the unclipped score. The reported return is the mean over all K x E rollouts.

Standard error (our choice, documented): the SE of the K per-checkpoint means,
`std(m_1..m_K, ddof=1) / sqrt(K)`. Rollouts of one checkpoint share its policy and are not
independent samples of "the agent"; the checkpoints (gradient steps) are, which is what the
paper's "mean across 10 gradient steps with 20 validation simulations" averages over. When several
seeds of one setting are aggregated, the per-checkpoint means of all seeds are pooled (K x seeds
units). The SE over all K x E rollouts as if independent (`se_rollouts`) is kept in the CSV.

Random-policy and expert scores are measured with the same protocol in the same env (K x E
rollouts) and cached in `LOGDIR/eval/reference.json` (for a sweep run, also in the shared stage
its `data` links to, so one measurement serves the env); per-checkpoint results are cached in
`LOGDIR/eval/<agent>/ckpt-<step>.json`, so a re-run only plays the checkpoints not done yet.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import warnings
from typing import Any, Callable, Sequence

from ditto_tf.config import Config
from ditto_tf.errors import UserError, about
from ditto_tf.driver import Actor, ExpertActor, RandomActor, drive, quotas
from ditto_tf.rundir import RunDir, checkpoint_step, resolve_path
from ditto_tf.runs import (AGENTS, Run, check_readable, find_runs, checkpoint_signature, env_signature,
                           list_checkpoints, offline_summary, read_cache, read_lines, write_json)
from ditto_tf.scores import RunResult, summarize

EVAL_SEED = 10**6                           # eval env seeds are disjoint from collection seeds


def eval_seed(config: Config) -> int:
    """First env seed of the evaluation envs (env i uses this + i), the same for every checkpoint
    and agent of a run seed: common random numbers make agents' scores directly comparable."""
    return EVAL_SEED + 1000 * int(config.seed)


def eval_config(config: Config) -> Config:
    """The run's env settings, but Atari always to the real game over (full games)."""
    return config.update({"env.life_done": False})


# ----------------------------------------------------------------------------- driver

@dataclasses.dataclass(frozen=True)
class Protocol:
    """Checkpoints x rollouts over how many envs; None takes the run's `eval.*` config keys."""

    checkpoints: int | None = None
    episodes: int | None = None
    envs: int | None = None
    reference_episodes: int | None = None   # None: checkpoints x episodes, as for the agents
    deterministic: bool = False             # act with the policy's mode instead of sampling

    def resolve(self, config: Config) -> "Protocol":
        k = int(self.checkpoints or config.eval.checkpoints)
        e = int(self.episodes or config.eval.episodes)
        n = int(self.envs or config.eval.envs)
        for key, value in (("checkpoints", k), ("episodes", e), ("envs", n)):
            if value < 1:
                raise UserError(f"eval.{key}: must be at least 1, got {value}")
        return Protocol(k, e, n, int(self.reference_episodes or k * e), self.deterministic)


def _play(config: Config, protocol: Protocol, seed: int, episodes: int,
          make_actor: Callable[[list[Any]], Actor], progress: Any) -> dict[str, Any]:
    """Roll `episodes` episodes on `protocol.envs` fresh envs seeded seed, seed + 1, ..."""
    from ditto_tf.envs import make_env

    envs = [make_env(config, seed + i) for i in range(min(protocol.envs, episodes))]
    try:
        played = drive(envs, make_actor(envs), quotas(episodes, len(envs)),
                       on_episode=None if progress is None else lambda _: progress.update(1))
    finally:
        for env in envs:
            env.close()
    return {"returns": [e.score for e in played], "lengths": [e.length for e in played]}


def _load_expert(config: Config) -> Any:
    from ditto_tf.experts import load_expert  # torch and the zoo: only when needed

    return load_expert(config)


def _manifest_expert(logdirs: Sequence[pathlib.Path]) -> dict[str, Any] | None:
    """The collected expert episodes' returns (same env, real rollouts): the fallback normaliser
    when the expert itself cannot be loaded at evaluation time."""
    for logdir in logdirs:
        rows = []
        for line in read_lines(RunDir(logdir).manifest):
            if line.get("set") in ("expert_train", "expert_val") and "return" in line:
                rows.append(line)
        if rows:
            return {"returns": [float(r["return"]) for r in rows],
                    "lengths": [int(r.get("length", 0)) for r in rows], "source": "manifest"}
    return None


class _References:
    """Random and expert scores per env setting, cached in every logdir of that setting as
    `eval/reference.json` (one measurement serves all runs of the env)."""

    def __init__(self, config: Config, protocol: Protocol):
        self.config, self.protocol = eval_config(config), protocol
        self.key = {"env": env_signature(self.config), "episodes": protocol.reference_episodes,
                    "envs": protocol.envs, "seed": EVAL_SEED}
        self.logdirs: list[pathlib.Path] = []
        self.data: dict[str, dict[str, Any]] = {}

    def add(self, logdir: pathlib.Path) -> None:
        """Use (and later write) the caches of `logdir` and of the run owning its data: a sweep
        run's `data` links to the shared stage, so all runs of an env share one measurement."""
        data = RunDir(logdir).data
        owner = data.resolve().parent if data.is_symlink() else logdir
        for directory in (logdir, owner):
            if directory in self.logdirs:
                continue
            self.logdirs.append(directory)
            cached = read_cache(RunDir(directory).reference_scores) or {}
            for who in ("random", "expert"):
                entry = cached.get(who)
                if who not in self.data and isinstance(entry, dict) and entry.get("key") == self.key:
                    self.data[who] = entry

    @property
    def pending(self) -> int:
        return sum(self.protocol.reference_episodes for who in ("random", "expert")
                   if who not in self.data)

    def measure(self, progress: Any) -> None:
        config, protocol, n = self.config, self.protocol, self.protocol.reference_episodes
        if "random" not in self.data:
            progress.set_description(f"random policy {config.task}")
            self.data["random"] = _play(config, protocol, EVAL_SEED, n,
                                        lambda envs: RandomActor(envs[0].act_space, EVAL_SEED),
                                        progress)
            self.save()
        if "expert" not in self.data:
            progress.set_description(f"expert {config.task}")
            try:
                expert = _load_expert(config)
            except UserError as e:
                fallback = _manifest_expert(self.logdirs)
                if fallback is None:
                    raise
                warnings.warn(f"expert not loadable ({e}); normalising by the collected expert "
                              "episodes' returns (data/manifest.jsonl)", stacklevel=2)
                progress.update(n)
                self.data["expert"] = fallback
            else:
                self.data["expert"] = _play(config, protocol, EVAL_SEED, n,
                                            lambda envs: ExpertActor(envs, expert, EVAL_SEED),
                                            progress)
            self.save()

    def save(self) -> None:
        # a manifest fallback is not a measurement: it is not cached, so a later run with the
        # expert available measures it
        entries = {who: {**data, "key": self.key} for who, data in self.data.items()
                   if data.get("source") != "manifest"}
        for logdir in self.logdirs:
            path = RunDir(logdir).reference_scores
            if read_cache(path) != entries:
                write_json(path, entries)

    def returns(self, who: str) -> list[float]:
        return [float(x) for x in self.data[who]["returns"]]


@dataclasses.dataclass
class _Plan:
    """One agent of one run: its checkpoints, what is cached and what is still to play."""

    run: Run
    protocol: Protocol
    prefixes: list[str]
    done: dict[str, dict[str, Any]]
    references: _References

    def key(self, prefix: str) -> dict[str, Any]:
        return {"checkpoint": checkpoint_signature(prefix), "env": env_signature(eval_config(
            self.run.config)), "episodes": self.protocol.episodes, "envs": self.protocol.envs,
            "seed": eval_seed(self.run.config), "deterministic": self.protocol.deterministic}

    def cache(self, prefix: str) -> pathlib.Path:
        return self.run.cache_dir / f"{pathlib.Path(prefix).name}.json"

    @property
    def todo(self) -> list[str]:
        return [p for p in self.prefixes if p not in self.done]


def plan(runs: Sequence[Run], protocol: Protocol = Protocol()) -> list[_Plan]:
    """Check every run's checkpoints and caches before any rollout (bad input fails fast)."""
    references: dict[str, _References] = {}
    plans = []
    for run in runs:
        resolved = protocol.resolve(run.config)
        prefixes = list_checkpoints(run, resolved.checkpoints)
        ref_key = (env_signature(eval_config(run.config)), resolved.reference_episodes, resolved.envs)
        refs = references.setdefault(str(ref_key), _References(run.config, resolved))
        refs.add(run.logdir)
        item = _Plan(run, resolved, prefixes, {}, refs)
        for prefix in prefixes:
            data = read_cache(item.cache(prefix))
            if data is not None and data.get("key") == item.key(prefix):
                item.done[prefix] = data
            else:
                check_readable(prefix)
        plans.append(item)
    return plans


def evaluate(runs: Sequence[Run], protocol: Protocol = Protocol(),
             progress: bool = True) -> list[RunResult]:
    """Play every agent's pending checkpoints (and the references) and return the results.

    Finished checkpoints are read from their caches; a re-run after a kill resumes at the first
    checkpoint not yet cached.
    """
    import tqdm

    plans = plan(runs, protocol)
    references = list({id(p.references): p.references for p in plans}.values())
    total = sum(r.pending for r in references)
    total += sum(len(p.todo) * p.protocol.episodes for p in plans)
    with tqdm.tqdm(total=total, unit="episode", desc="evaluation", disable=not progress or not total,
                   dynamic_ncols=True) as bar:
        for refs in references:
            refs.measure(bar)
            refs.save()  # also into logdirs that did not have the cached scores yet
        for item in plans:
            if not item.todo:
                continue
            policy = _policy_loader(item.run, item.protocol.deterministic)
            board = _ReturnBoard(item.run)
            for prefix in item.todo:
                bar.set_description(f"{item.run.name} {pathlib.Path(prefix).name}")
                actor = policy(prefix)
                data = _play(eval_config(item.run.config), item.protocol,
                             eval_seed(item.run.config), item.protocol.episodes,
                             lambda envs: actor, bar)
                data.update(key=item.key(prefix), checkpoint=prefix, step=checkpoint_step(prefix))
                write_json(item.cache(prefix), data)
                item.done[prefix] = data
                board.write(data["step"], data["returns"])
    results = []
    for item in plans:
        steps = [checkpoint_step(p) for p in item.prefixes]
        results.append(RunResult(
            run=item.run, steps=steps,
            returns=[[float(x) for x in item.done[p]["returns"]] for p in item.prefixes],
            lengths=[[int(x) for x in item.done[p]["lengths"]] for p in item.prefixes],
            random=item.references.returns("random"), expert=item.references.returns("expert"),
            offline=offline_summary(item.run, from_step=steps[0]), earlier=_earlier(item)))
    return results


def _earlier(item: _Plan) -> list[tuple[int, list[float]]]:
    """Cached results of checkpoints before the evaluated ones, played under the same protocol
    (a checkpoint that still exists must also match its cached signature)."""
    same = {k: v for k, v in item.key(item.prefixes[0]).items() if k != "checkpoint"}
    first = checkpoint_step(item.prefixes[0])
    out = []
    for path in item.run.cache_dir.glob("ckpt-*.json"):
        data = read_cache(path)
        if not data or not isinstance(data.get("key"), dict) or "step" not in data:
            continue
        key = dict(data["key"])
        signature = key.pop("checkpoint", None)
        prefix = str(item.run.checkpoint_dir / path.stem)
        if key != same or int(data["step"]) >= first:
            continue
        if pathlib.Path(prefix + ".index").is_file() and checkpoint_signature(prefix) != signature:
            continue
        out.append((int(data["step"]), [float(x) for x in data["returns"]]))
    return sorted(out)


class _ReturnBoard:
    """Writes each evaluated checkpoint's true-env return (`eval/return`, and `eval/return_se`
    over its rollouts) into the agent's own TensorBoard run and metrics.jsonl, beside the
    offline `val/*` curves, so return and latent distance show on one screen."""

    def __init__(self, run: Run):
        from ditto_tf.logger import Logger  # TensorFlow: only when something is played

        self.logger = Logger(run.rundir.phase_dir(run.agent))

    def write(self, step: int, returns: Sequence[float]) -> None:
        score = summarize([returns])
        self.logger.scalar("eval/return", score.mean)
        if math.isfinite(score.se):  # one rollout has no spread: no SE rather than a NaN
            self.logger.scalar("eval/return_se", score.se)
        self.logger.write(step)


def _policy_loader(run: Run, deterministic: bool) -> Callable[[str], Actor]:
    """`prefix -> actor`: the agent's policy built once (world model loaded once), restored
    from each checkpoint in turn.

    The policy acts from raw observation dicts batched over envs (encoder + RSSM posterior filter
    + actor for the latent agents, the pixel CNN for BC), resetting its state at `is_first`.
    """
    from ditto_tf.agents.policy import load_policy

    policy: Any = None

    def load(prefix: str) -> Actor:
        nonlocal policy
        with about(prefix, f"cannot load the {run.agent} policy"):  # a damaged checkpoint file
            if policy is None:
                policy = load_policy(run.config, run.rundir, run.agent, checkpoint=prefix,
                                     deterministic=deterministic)
            else:
                policy.load(prefix)
        return policy

    return load


# ----------------------------------------------------------------------------- entry points

def report(logdirs: Sequence[str | pathlib.Path], out: str | pathlib.Path | None = None,
           protocol: Protocol = Protocol(), agents: Sequence[str] = AGENTS,
           progress: bool = True, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate every agent in `logdirs`, print the markdown table, write the tables and plots
    into `out` (default: LOGDIR/eval for one logdir); returns {rows, results, files}."""
    from ditto_tf import plots  # matplotlib only when reporting

    logdirs = [resolve_path(d) for d in logdirs]
    if not logdirs:
        raise UserError("no run directory given")
    out = resolve_path(out) if out else default_out(logdirs)
    results = evaluate(find_runs(logdirs, agents), protocol, progress)
    rows, kept = plots.keep_other_agents(plots.aggregate(results), out, agents)
    files = plots.write_tables(rows, out) + plots.write_plots(results, rows, out)
    echo(plots.markdown_table(rows))
    comparison = plots.comparison_table(rows)
    if comparison:
        echo(comparison)
    if kept:
        echo(f"kept the earlier rows of {', '.join(plots.LABELS[a] for a in kept)} "
             f"from {out / 'results.csv'} (not evaluated now: --agents)")
    echo(f"SE: standard error of the per-checkpoint means (see ditto_tf/evaluation.py)")
    echo("wrote " + ", ".join(str(f) for f in files))
    return {"rows": rows, "results": results, "files": files}


def default_out(logdirs: Sequence[pathlib.Path]) -> pathlib.Path:
    """LOGDIR/eval for one run; the runs' common parent + /eval for several."""
    if len(logdirs) == 1:
        return RunDir(logdirs[0]).eval_dir
    common = pathlib.Path(os.path.commonpath([str(d) for d in logdirs]))
    if common == pathlib.Path(common.anchor):
        raise UserError("the run directories share no parent folder; give --out DIR")
    return RunDir(common).eval_dir


def run(config: Config, run: RunDir) -> None:
    """`train.py --phase evaluate`: evaluate every trained agent of the run with `config.eval`."""
    report([run.root], protocol=Protocol(config.eval.checkpoints, config.eval.episodes,
                                       config.eval.envs))
