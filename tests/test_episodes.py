"""Episode files on disk: round trip, atomic writes under crashes, every corrupt-file case."""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from ditto_tf.data.episodes import (
    episode_info,
    list_episodes,
    load_episode,
    load_episodes,
    next_index,
    save_episode,
)
from ditto_tf.errors import UserError
from ditto_tf.files import atomic_path

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def make_episode(length: int = 12, actions: int = 3, size: int = 8, seed: int = 0) -> dict:
    """A valid episode whose pixel (0, 0) counts steps and pixel (0, 1) holds `seed`."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (length, size, size, 1), dtype=np.uint8)
    image[:, 0, 0, 0] = np.arange(length) % 256
    image[:, 0, 1, 0] = seed
    action = np.eye(actions, dtype=np.float32)[rng.integers(actions, size=length)]
    action[0] = 0
    reward = rng.normal(size=length).astype(np.float32)
    reward[0] = 0
    is_first = np.zeros(length, bool)
    is_first[0] = True
    is_last = np.zeros(length, bool)
    is_last[-1] = True
    return dict(image=image, action=action, reward=reward, is_first=is_first,
                is_last=is_last, is_terminal=is_last.copy())


def write_raw(path: pathlib.Path, **arrays) -> pathlib.Path:
    """Write an npz exactly as given (bypassing save_episode's checks)."""
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def test_round_trip(tmp_path):
    episode = make_episode(length=17, seed=3)
    episode["ram"] = np.arange(17 * 4, dtype=np.uint8).reshape(17, 4)  # extra keys are kept
    path = save_episode(tmp_path, episode, index=7)
    assert path.name == "000007-17.npz"
    loaded = load_episode(path)
    assert sorted(loaded) == sorted(episode)
    for key, value in episode.items():
        assert loaded[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded[key], value)
    info = episode_info(path)
    assert (info.index, info.length) == (7, 17)
    assert info.score == pytest.approx(float(episode["reward"].sum()), rel=1e-6)


def test_save_casts_actions_rewards_and_flags(tmp_path):
    episode = make_episode(length=5)
    episode["action"] = episode["action"].astype(np.float64)
    episode["reward"] = [0.0, 1.0, 2.0, 0.5, -1.0]
    episode["is_terminal"] = episode["is_terminal"].astype(np.int64)
    loaded = load_episode(save_episode(tmp_path, episode, 0))
    assert loaded["action"].dtype == np.float32
    assert loaded["reward"].dtype == np.float32 and loaded["reward"][2] == 2.0
    assert loaded["is_terminal"].dtype == bool and loaded["is_terminal"][-1]


def test_save_rejects_invalid_episode_and_writes_nothing(tmp_path):
    episode = make_episode()
    episode["image"] = episode["image"].astype(np.float32)
    with pytest.raises(UserError, match="episode 0: key 'image' has dtype float32"):
        save_episode(tmp_path, episode, 0)
    episode = make_episode()
    episode["action"] = np.array([object()] * 12)
    with pytest.raises(UserError, match="episode 3: key 'action' holds Python objects"):
        save_episode(tmp_path, episode, 3)
    assert list(tmp_path.iterdir()) == []


def test_save_replaces_same_index(tmp_path):
    save_episode(tmp_path, make_episode(length=10), 0)
    save_episode(tmp_path, make_episode(length=11), 0)
    assert [p.name for p in tmp_path.iterdir()] == ["000000-11.npz"]


def test_list_sorts_by_index_ignores_temp_files(tmp_path):
    for index in (10, 2, 1):
        save_episode(tmp_path, make_episode(length=5 + index), index)
    (tmp_path / ".000003-9.npz.abc123.tmp").write_bytes(b"half written")
    (tmp_path / "notes.txt").write_text("not an episode")
    assert [p.name for p in list_episodes(tmp_path)] == ["000001-6.npz", "000002-7.npz", "000010-15.npz"]
    assert next_index(tmp_path) == 11
    assert next_index(tmp_path / "missing") == 0
    assert list_episodes(tmp_path / "missing") == []


def test_load_episodes_first_by_index(tmp_path):
    for index in (3, 0, 1, 2):
        save_episode(tmp_path, make_episode(length=6, seed=index), index)
    episodes = load_episodes(tmp_path, limit=2)
    assert [int(e["image"][0, 0, 1, 0]) for e in episodes] == [0, 1]
    assert len(load_episodes(tmp_path)) == 4


def test_exception_inside_atomic_block_leaves_no_file(tmp_path):
    final = tmp_path / "000000-12.npz"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, image=make_episode()["image"])
            raise RuntimeError("crash after half the episode")
    assert list(tmp_path.iterdir()) == []
    assert list_episodes(tmp_path) == []


def test_sigkill_during_save_leaves_no_file_under_final_name(tmp_path):
    # The child writes one large, incompressible episode (about 0.4 s to compress); we kill it as
    # soon as its temp file has received bytes, i.e. in the middle of np.savez_compressed.
    child = (
        "import sys, numpy as np\n"
        "from ditto_tf.data.episodes import save_episode\n"
        "T = 3000\n"
        "image = np.random.default_rng(0).integers(0, 256, (T, 64, 64, 1), dtype=np.uint8)\n"
        "flags = np.zeros(T, bool); flags[0] = True; last = np.zeros(T, bool); last[-1] = True\n"
        "episode = dict(image=image, action=np.zeros((T, 2), np.float32),\n"
        "               reward=np.zeros(T, np.float32), is_first=flags, is_last=last,\n"
        "               is_terminal=last)\n"
        "print('ready', flush=True)\n"
        "save_episode(sys.argv[1], episode, 0)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", child, str(tmp_path)], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while not any(_size(p) > 0 for p in tmp_path.glob(".*.tmp")):
            assert process.poll() is None, "writer finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "000000-3000.npz").exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []
    leftovers = list(tmp_path.glob(".*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # half-written, ignored
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(leftovers[0])
    assert list_episodes(tmp_path) == []


def _size(path: pathlib.Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed or removed between glob and stat
        return 0


# --- corrupt files: each case is a one-line UserError that names the file ---------------------


def _check_error(path: pathlib.Path, pattern: str, function=load_episode) -> None:
    with pytest.raises(UserError, match=pattern) as info:
        function(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_truncated_file(tmp_path):
    path = save_episode(tmp_path, make_episode(length=40), 0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _check_error(path, "unreadable episode file")
    _check_error(path, "unreadable episode file", episode_info)
    _check_error(tmp_path, "unreadable episode file", list_episodes)


def test_empty_and_garbage_files(tmp_path):
    empty = tmp_path / "000000-5.npz"
    empty.write_bytes(b"")
    _check_error(empty, "unreadable episode file")
    garbage = tmp_path / "000001-5.npz"
    garbage.write_bytes(os.urandom(500))
    _check_error(garbage, "unreadable episode file")


def test_corrupt_compressed_member(tmp_path):
    path = save_episode(tmp_path, make_episode(length=40), 0)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("image.npy")
    data = bytearray(path.read_bytes())
    middle = info.header_offset + 100 + info.compress_size // 2
    data[middle : middle + 16] = bytes(16)  # damage the deflate stream of the image member
    path.write_bytes(bytes(data))
    _check_error(path, "damaged member 'image'")
    assert episode_info(path).length == 40  # the reward member is intact and readable alone


def test_missing_key(tmp_path):
    episode = make_episode()
    del episode["is_terminal"]
    path = write_raw(tmp_path / "000000-12.npz", **episode)
    _check_error(path, r"missing key\(s\) \['is_terminal'\]")
    _check_error(tmp_path, "missing key", list_episodes)


def test_wrong_dtypes(tmp_path):
    for index, (key, dtype) in enumerate(
        [("image", np.float32), ("action", np.int64), ("reward", np.float64), ("is_first", np.uint8)]
    ):
        episode = make_episode()
        episode[key] = episode[key].astype(dtype)
        path = write_raw(tmp_path / f"{index:06d}-12.npz", **episode)
        _check_error(path, f"key '{key}' has dtype {np.dtype(dtype).name}")


def test_inconsistent_lengths(tmp_path):
    episode = make_episode()
    episode["reward"] = episode["reward"][:-1]
    path = write_raw(tmp_path / "000000-12.npz", **episode)
    _check_error(path, "inconsistent lengths: image has 12 steps but {'reward': 11}")


def test_wrong_image_rank(tmp_path):
    episode = make_episode()
    episode["image"] = episode["image"][..., 0]
    path = write_raw(tmp_path / "000000-12.npz", **episode)
    _check_error(path, r"key 'image' has shape \(12, 8, 8\), expected rank 4")


def test_flags(tmp_path):
    episode = make_episode()
    episode["is_first"][0] = False
    _check_error(write_raw(tmp_path / "000000-12.npz", **episode), r"is_first\[0\] must be True")
    episode = make_episode()
    episode["is_last"][-1] = False
    episode["is_terminal"][-1] = False
    _check_error(write_raw(tmp_path / "000001-12.npz", **episode), r"is_last\[-1\] must be True")
    episode = make_episode()
    episode["is_terminal"][3] = True
    _check_error(write_raw(tmp_path / "000002-12.npz", **episode), "is_terminal is True")


def test_length_in_name_must_match(tmp_path):
    path = write_raw(tmp_path / "000000-13.npz", **make_episode(length=12))
    _check_error(path, "holds 12 steps but its name says 13")
    _check_error(path, "the name says 13 steps", episode_info)


def test_bad_name(tmp_path):
    path = write_raw(tmp_path / "episode.npz", **make_episode())
    _check_error(path, "not an episode file name")


def test_duplicate_index(tmp_path):
    write_raw(tmp_path / "000000-12.npz", **make_episode(length=12))
    write_raw(tmp_path / "0-12.npz", **make_episode(length=12))
    with pytest.raises(UserError, match="two files with index 0"):
        list_episodes(tmp_path)


def test_skip_corrupt_is_explicit_and_logs_each_skip(tmp_path, caplog):
    for index in range(4):
        save_episode(tmp_path, make_episode(length=10, seed=index), index)
    truncated = tmp_path / "000001-10.npz"
    truncated.write_bytes(truncated.read_bytes()[:100])
    damaged = tmp_path / "000002-10.npz"
    data = bytearray(damaged.read_bytes())
    with zipfile.ZipFile(damaged) as archive:
        info = archive.getinfo("image.npy")
    data[info.header_offset + 120 : info.header_offset + 140] = bytes(20)
    damaged.write_bytes(bytes(data))
    with pytest.raises(UserError, match="000001-10.npz"):
        load_episodes(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ditto_tf.data.episodes"):
        episodes = load_episodes(tmp_path, skip_corrupt=True)
    assert [int(e["image"][0, 0, 1, 0]) for e in episodes] == [0, 3]
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 2
    assert "000001-10.npz" in skipped[0] and "000002-10.npz" in skipped[1]
