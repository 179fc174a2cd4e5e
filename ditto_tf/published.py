"""Published reference scores that the results tables show beside ours."""

from __future__ import annotations

# DreamerV2's published Atari results (scores/atari-dreamerv2.json in danijar/dreamerv2): the
# final evaluation return per game, mean over its seeds, after 200M environment frames of ONLINE
# reinforcement learning with the true reward, sticky actions (p = 0.25) and the full game. A
# reference line for plots, not an imitation-learning baseline.
DREAMERV2_ATARI_SCORES: dict[str, float] = {
    "beam_rider": 17917.5,
    "breakout": 459.2,
    "ms_pacman": 5376.5,
    "pong": 18.4,
    "qbert": 70512.0,
    "space_invaders": 2358.4,
}
DREAMERV2_SCORES_LABEL = "DreamerV2 (online RL, 200M frames, sticky actions)"


def dreamerv2_score(task: str) -> float | None:
    """DreamerV2's published final return for `atari_<game>`, or None if it has none."""
    suite, _, game = task.partition("_")
    return DREAMERV2_ATARI_SCORES.get(game) if suite == "atari" else None
