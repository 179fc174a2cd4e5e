"""Who acts in collect: the actor of each episode set (random, expert, epsilon-expert, another
zoo algorithm), played by `ditto_tf.driver.drive`."""

from __future__ import annotations

import sys

from ditto_tf import envs
from ditto_tf.config import Config
from ditto_tf.driver import Actor, EpsilonActor, ExpertActor, RandomActor
from ditto_tf.errors import UserError

Entry = tuple[str, Actor]  # (agent label for the manifest, who acts)


def build_policies(config: Config, env: envs.Env) -> dict[str, Entry]:
    """{set name: (agent label, actor on `env`)}.

    Loads every expert the sets need and checks it against `env` (action space, observations)
    before anything is written: bad folders, zips and mismatches fail here in one line. Collect
    seeds every episode, so each actor restarts its generators from the episode's seed.
    """
    random = RandomActor(env.act_space)

    def load(algo: str | None = None) -> Entry:
        if config.expert.source == "random":  # seeded per episode, unlike a shared generator
            return "random", random
        from ditto_tf.experts import load_expert  # torch and the zoo: only when needed

        expert = load_expert(config, algo=algo, env=env)
        return expert.label, ExpertActor([env], expert)

    needed = config.data.expert_train + config.data.expert_val > 0
    wm = str(config.data.wm_policy)
    eps = float(config.data.wm_epsilon)
    if wm == "epsilon" and not 0.0 <= eps <= 1.0:
        raise UserError(f"data.wm_epsilon: {eps} is not a probability in [0, 1]")
    if needed or wm in ("expert", "epsilon", config.expert.algo):
        expert = load()
    else:  # no expert episodes to record: nothing to load
        expert = (f"{config.expert.algo}:{config.expert.env_id} (not loaded)", random)
    if wm == "random":
        wm_entry: Entry = ("random", random)
    elif wm in ("expert", config.expert.algo):
        wm_entry = expert
    elif wm == "epsilon":
        label, actor = expert
        actor = EpsilonActor(actor, random, eps) if actor is not random else random
        wm_entry = (f"{label} + epsilon {eps:g} random", actor)
    else:  # another algorithm from the same source, e.g. a2c
        try:
            wm_entry = load(wm)
        except UserError as e:
            raise UserError(f"data.wm_policy {wm!r} (expert | random | epsilon | a zoo algo): {e}") from None
    torch = sys.modules.get("torch")
    if torch is not None:
        # One env, batch-1 inference: extra threads only add sync cost, and on a busy 2-core
        # machine they made the Atari CNN 15x slower (24 ms vs 1.4 ms per step).
        torch.set_num_threads(1)
    return {"wm": wm_entry, "expert_train": expert, "expert_val": expert}
