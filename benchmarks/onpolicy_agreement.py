"""Does the agent act like the expert on its own states, not only on the expert's? (covariate shift)

    python benchmarks/onpolicy_agreement.py LOGDIR [--agents ditto dgail dbc bc] [--episodes 5]

For each trained agent of a run, plays true-env episodes twice: (a) the agent drives, (b) the
expert drives (the agent's filter is told the expert's actions). At every step both the agent
(its most likely action) and the run's expert are asked what they would do; printed: the
fraction of steps they agree and the mean episode length. The held-out `action_accuracy` of
training is (b) on recorded frames; a policy that agrees in (b) but not in (a) has learned the
expert's states only and drifts off them in the real env. Discrete actions only. Where the env
has actions with the same effect (MinAtar's full action set: a game ignores the actions outside
its minimal set), agreement is also counted by effect ("exact / by effect").
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from ditto_tf.config import Config  # noqa: E402
from ditto_tf.errors import UserError, command  # noqa: E402
from ditto_tf.rundir import RunDir  # noqa: E402


class Agreement:
    """An actor that asks both the agent (its most likely action) and the expert at every step,
    counts how often they agree, takes the action of `driver` ("agent" | "expert") and tells the
    agent's filter the action taken."""

    def __init__(self, env: Any, policy: Any, expert: Any, driver: str):
        from ditto_tf.driver import ExpertActor

        self.env, self.policy, self.driver = env, policy, driver
        self.expert = ExpertActor([env], expert)
        effects = getattr(env, "action_effects", None)
        self.effects = effects() if effects else np.arange(env.act_space.n)
        self.agree: list[tuple[bool, bool]] = []  # (same action, same effect) per step

    def reset(self, index: int, seed: int | None = None) -> None:
        """A new episode: both forget their state."""
        self.expert.reset(index)  # no torch seeding: the expert acts as in the benchmark's runs
        self.policy.reset()

    def act(self, obs: dict[str, np.ndarray]) -> list[int]:
        """Both choose, the driver's action is taken."""
        mine = int(np.argmax(self.policy.act(obs)[0]))
        theirs = int(self.expert.act(obs)[0])
        self.agree.append((mine == theirs, self.effects[mine] == self.effects[theirs]))
        taken = mine if self.driver == "agent" else theirs
        self.policy.record_actions(self.env.action_vector(taken)[None])
        return [taken]


def agreement(config: Config, logdir: pathlib.Path, agent: str, episodes: int,
              seed: int = 10_000) -> dict[str, tuple[float, float, float]]:
    """{driver ("agent" | "expert"): (agreement with the expert per step, the same by effect,
    mean episode length in agent steps)}; env, expert and policy are built once for both."""
    from ditto_tf.agents.policy import load_policy
    from ditto_tf.driver import drive
    from ditto_tf.envs import make_env
    from ditto_tf.experts import load_expert

    env = make_env(config, seed)
    if not env.discrete:
        raise UserError(f"{config.task}: agreement needs discrete actions")
    expert = load_expert(config, env=env)
    policy = load_policy(config, RunDir(logdir), agent, deterministic=True)
    out = {}
    for driver in ("agent", "expert"):
        actor = Agreement(env, policy, expert, driver)
        played = drive([env], actor, [episodes], seeds=lambda _, episode: seed + episode)
        same_action, same_effect = np.mean(actor.agree, axis=0)
        out[driver] = (float(same_action), float(same_effect),
                       float(np.mean([e.length for e in played])))
    env.close()
    return out


@command()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logdir", type=pathlib.Path)
    parser.add_argument("--agents", nargs="+", default=["ditto", "dgail", "dbc", "bc"])
    parser.add_argument("--episodes", type=int, default=5)
    args = parser.parse_args()
    from ditto_tf.runs import load_run_config

    config = load_run_config(args.logdir)  # one-line error when LOGDIR is not a run
    print(f"{args.logdir}: agreement with the expert (agent's most likely action), {args.episodes} episodes each")
    print("| agent | agent drives: agreement (exact / by effect) | episode length "
          "| expert drives: agreement (exact / by effect) | episode length |")
    print("|---|---|---|---|---|")
    for agent in args.agents:
        if not RunDir(args.logdir).checkpoints(agent).is_dir():
            continue
        result = agreement(config, args.logdir, agent, args.episodes)
        cells = [f"{a:.3f} / {e:.3f} | {length:.1f}" for a, e, length in (result["agent"], result["expert"])]
        print(f"| {agent} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
