"""Episode files (`episodes`) and bounded-memory sequence batches (`dataset`).

`dataset` imports TensorFlow; import it explicitly (`from ditto_tf.data import dataset`).
"""

from ditto_tf.data.episodes import (
    KEYS,
    EpisodeInfo,
    episode_info,
    list_episodes,
    load_episode,
    load_episodes,
    next_index,
    save_episode,
)

__all__ = [
    "KEYS",
    "EpisodeInfo",
    "episode_info",
    "list_episodes",
    "load_episode",
    "load_episodes",
    "next_index",
    "save_episode",
]
