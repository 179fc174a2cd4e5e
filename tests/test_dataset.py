"""Sequence sampling from real episode files: shapes, contiguity, chunking across episode ends,
frames sampled in proportion, seeding, resume, caching."""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import pytest

from ditto_tf.data.dataset import SequenceSampler, make_dataset
from ditto_tf.data.episodes import save_episode
from ditto_tf.errors import UserError
from test_episodes import make_episode

B, L = 4, 6


@pytest.fixture
def episode_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    directory = tmp_path / "wm"
    for index, length in enumerate([10, 25, 3, 40]):  # episode 2 is shorter than L
        save_episode(directory, make_episode(length=length, seed=index), index)
    return directory


def _stream(source: pathlib.Path) -> dict[str, np.ndarray]:
    """The saved episodes of `source`, in index order, concatenated."""
    episodes = [np.load(p) for p in sorted(source.glob("*.npz"))]
    return {k: np.concatenate([e[k] for e in episodes]) for k in episodes[0].files}


def _check_sequences(batch: dict, source: pathlib.Path) -> None:
    """Every sequence is L consecutive steps of the circular stream of saved episodes (a window
    that outlasts its episode goes on with the next one), flags copied faithfully."""
    stream = _stream(source)
    for b in range(B):
        index, start = int(batch["image"][b, 0, 0, 1, 0]), int(batch["image"][b, 0, 0, 0, 0])
        at = int(np.flatnonzero((stream["image"][:, 0, 1, 0] == index)
                                & (stream["image"][:, 0, 0, 0] == start))[0])
        rows = (at + np.arange(L)) % len(stream["action"])
        for key in ("image", "action", "reward", "is_last", "is_terminal"):
            np.testing.assert_array_equal(batch[key][b], stream[key][rows])
        expected_first = stream["is_first"][rows].copy()
        expected_first[0] = True
        np.testing.assert_array_equal(batch["is_first"][b], expected_first)


def test_batch_shapes_dtypes_and_contents(episode_dir):
    sampler = SequenceSampler(episode_dir, batch=B, length=L, seed=0)
    assert sampler.num_episodes == 4  # the 3-step episode is sampled too (chunked with the next)
    for i in range(20):
        batch = sampler.sample_batch(i)
        assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
            "image": ((B, L, 8, 8, 1), np.uint8),
            "action": ((B, L, 3), np.float32),
            "reward": ((B, L), np.float32),
            "is_first": ((B, L), np.bool_),
            "is_last": ((B, L), np.bool_),
            "is_terminal": ((B, L), np.bool_),
        }
        assert batch["is_first"][:, 0].all()
        _check_sequences(batch, episode_dir)


def test_tf_dataset_matches_numpy_and_resumes(episode_dir):
    sampler = SequenceSampler(episode_dir, batch=B, length=L, seed=5)
    stream = [b for _, b in zip(range(6), make_dataset(episode_dir, B, L, seed=5))]
    for i, batch in enumerate(stream):
        assert batch["image"].dtype.name == "uint8" and tuple(batch["image"].shape) == (B, L, 8, 8, 1)
        expected = sampler.sample_batch(i)
        for key in expected:
            np.testing.assert_array_equal(batch[key].numpy(), expected[key])
    resumed = [b for _, b in zip(range(3), make_dataset(episode_dir, B, L, seed=5, start_batch=3))]
    for a, b in zip(stream[3:], resumed):
        for key in a:
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())


def test_same_seed_same_batches_different_seed_differs(episode_dir):
    a = SequenceSampler(episode_dir, B, L, seed=1)
    b = SequenceSampler(episode_dir, B, L, seed=1)
    c = SequenceSampler(episode_dir, B, L, seed=2)
    for i in range(5):
        np.testing.assert_array_equal(a.sample_batch(i)["image"], b.sample_batch(i)["image"])
    starts = lambda s: np.stack([np.stack(s.sample_indices(i)) for i in range(5)])  # noqa: E731
    assert not np.array_equal(starts(a), starts(c))
    assert not np.array_equal(a.sample_indices(0), a.sample_indices(1))


def test_short_episodes_and_episode_ends_are_sampled_in_proportion(tmp_path):
    """Episodes shorter than the window (as CartPole's failures are) are sampled, and the last
    frames of every episode (where the pole falls) get their share of the sampled frames;
    the next episode's is_first marks where a window crosses into it."""
    length, lengths = 32, [12, 20, 31, 56, 90, 140, 25, 8]
    for index, steps in enumerate(lengths):
        save_episode(tmp_path, make_episode(length=steps, seed=index), index)
    sampler = SequenceSampler(tmp_path, batch=64, length=length, seed=0)
    counts: dict[tuple[int, int], int] = {}
    sampled = 0
    for i in range(150):
        batch = sampler.sample_batch(i)
        index, step = batch["image"][:, :, 0, 1, 0], batch["image"][:, :, 0, 0, 0]
        for key in zip(index.ravel().tolist(), step.ravel().tolist()):
            counts[key] = counts.get(key, 0) + 1
        sampled += index.size
        # inside a window, a new episode begins exactly where its step counter is 0
        np.testing.assert_array_equal(batch["is_first"][:, 1:], step[:, 1:] == 0)
    assert {e for e, _ in counts} == set(range(len(lengths)))  # every episode, 8 and 12 steps too
    last = sum(v for (e, t), v in counts.items() if t >= lengths[e] - 5)
    share = 5 * len(lengths) / sum(lengths)  # 40 of 382 frames: 10.5%
    assert abs(last / sampled - share) < 0.15 * share, (last / sampled, share)
    # and every single frame is drawn about equally often (each lies in exactly L windows)
    per_frame = np.array([counts.get((e, t), 0) for e, n in enumerate(lengths) for t in range(n)])
    expected = sampled / sum(lengths)
    assert per_frame.min() > 0.7 * expected and per_frame.max() < 1.3 * expected


def test_several_directories_and_limit(tmp_path, episode_dir):
    other = tmp_path / "expert"
    save_episode(other, make_episode(length=30, seed=9), 0)
    sampler = SequenceSampler([episode_dir, other], B, L, seed=0)
    assert sampler.num_episodes == 5
    seen = {int(sampler.sample_batch(i)["image"][b, 0, 0, 1, 0]) for i in range(40) for b in range(B)}
    assert seen == {0, 1, 2, 3, 9}
    limited = SequenceSampler([episode_dir], B, L, seed=0, limit=2)
    assert limited.num_episodes == 2 and limited.num_steps == 35
    per_directory = SequenceSampler([episode_dir, other], B, L, seed=0, limit=[1, None])
    assert per_directory.num_steps == 10 + 30


def test_errors_name_the_directory(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=f"{empty}: no episode files"):
        SequenceSampler(empty, B, L, seed=0)
    with pytest.raises(UserError, match="missing: episode directory not found"):
        SequenceSampler(tmp_path / "missing", B, L, seed=0)
    wide, narrow = tmp_path / "wide", tmp_path / "narrow"
    save_episode(wide, make_episode(length=10, size=16), 0)
    save_episode(narrow, make_episode(length=10, size=8), 0)
    with pytest.raises(UserError, match=r"image shape \(8, 8, 1\) differs from \(16, 16, 1\)"):
        SequenceSampler([wide, narrow], B, L, seed=0)


def test_cache_built_once_and_rebuilt_when_source_changes(episode_dir):
    SequenceSampler(episode_dir, B, L, seed=0)
    cache = episode_dir / ".cache" / "000001-25.npz"
    assert cache.is_file()
    with np.load(cache) as npz:  # the cache is a plain uncompressed npz of the validated episode
        np.testing.assert_array_equal(npz["image"], np.load(episode_dir / "000001-25.npz")["image"])
    built = cache.stat().st_mtime_ns
    SequenceSampler(episode_dir, B, L, seed=0)
    assert cache.stat().st_mtime_ns == built  # reused
    save_episode(episode_dir, make_episode(length=25, seed=7), 1)  # same name, new content
    sampler = SequenceSampler(episode_dir, B, L, seed=0)
    images = [sampler.sample_batch(i)["image"][:, 0, 0, 1, 0] for i in range(30)]
    assert 7 in np.concatenate(images) and 1 not in np.concatenate(images)
    (episode_dir / "000003-40.npz").unlink()  # a deleted episode's cache is removed too
    SequenceSampler(episode_dir, B, L, seed=0)
    assert sorted(p.name for p in (episode_dir / ".cache").iterdir()) == [
        "000000-10.npz", "000001-25.npz", "000002-3.npz"]


def test_damaged_cache_is_rebuilt(episode_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    first = SequenceSampler(episode_dir, B, L, seed=3, cache_dir=cache_dir).sample_batch(0)
    (cache,) = cache_dir.glob("*/000003-40.npz")
    cache.write_bytes(cache.read_bytes()[:1000])
    again = SequenceSampler(episode_dir, B, L, seed=3, cache_dir=cache_dir).sample_batch(0)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not (episode_dir / ".cache").exists()


def test_corrupt_episode_fails_or_is_skipped(episode_dir, caplog):
    path = episode_dir / "000003-40.npz"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(UserError, match="000003-40.npz"):
        SequenceSampler(episode_dir, B, L, seed=0)
    with caplog.at_level(logging.WARNING):
        sampler = SequenceSampler(episode_dir, B, L, seed=0, skip_corrupt=True)
    assert sampler.num_episodes == 3  # 10, 25 and 3 steps: the short one is sampled too
    assert any("000003-40.npz" in r.getMessage() for r in caplog.records)
    broken = episode_dir / "000000-10.npz"
    broken.write_bytes(b"")
    limited = SequenceSampler(episode_dir, B, 2, seed=0, skip_corrupt=True, limit=2)
    assert limited.num_steps == 25 + 3  # the limit counts valid episodes
    for other in episode_dir.glob("*.npz"):
        other.write_bytes(b"")
    with pytest.raises(UserError, match=f"{episode_dir}: no readable episode files"):
        SequenceSampler(episode_dir, B, L, seed=0, skip_corrupt=True)


def test_unwritable_cache_is_one_line_error(episode_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where the cache directory should go")  # fails even for root
    with pytest.raises(UserError, match="a_file/wm-[0-9a-f]+: cannot write the episode cache"):
        SequenceSampler(episode_dir, B, L, seed=0, cache_dir=blocker)
