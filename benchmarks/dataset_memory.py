"""Peak memory and throughput of the sequence dataset on a synthetic 1M-frame episode directory.

    flock /tmp/ditto_heavy.lock python benchmarks/dataset_memory.py            # temp dir, removed
    flock /tmp/ditto_heavy.lock python benchmarks/dataset_memory.py --dir /tmp/ditto_bench --keep
    flock /tmp/ditto_heavy.lock python benchmarks/dataset_memory.py --dir /tmp/ditto_bench --cold

Builds (or reuses) `--episodes` x `--length` frames of 64x64x1 Atari-like images (a few sprites
doing random walks over a static background, so zlib compresses them about as well as real
frames), then samples `--batches` batches of B x L sequences through the tf.data pipeline of
`ditto_tf.data.dataset` and reports peak resident memory (VmHWM, reset before each phase) and
batches/s. With `--compare-mmap` it also samples the same batches through np.memmap views of the
same cache files, to show why the dataset reads with os.pread: mapped pages count as resident
memory, page-cache pages read through pread do not.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import tqdm  # noqa: E402

from ditto_tf.data.episodes import list_episodes, save_episode  # noqa: E402


def memory_mb() -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process in MB."""
    values = {}
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux: writing 5 to clear_refs)."""
    pathlib.Path("/proc/self/clear_refs").write_text("5")


def synthetic_episode(length: int, size: int, actions: int, rng: np.random.Generator) -> dict:
    """Atari-like frames: a striped background, a sparse scrolling star field (as in BeamRider)
    and sprites doing random walks. zlib compresses them about 25x; real 64x64 gray frames of
    BeamRider / Ms. Pac-Man / Pong / Breakout under random play compress 26x / 33x / 79x / 92x."""
    rows = np.arange(size)
    background = ((rows[:, None] // 8 + rows[None, :] // 16) % 3 * 30 + 20).astype(np.uint8)
    stars = np.where(rng.random((size, 4 * size)) < 0.007, rng.integers(60, 200, (size, 4 * size)), 0)
    columns = (rows[None, :] + 2 * np.arange(length)[:, None]) % (4 * size)
    image = np.maximum(background[None], stars[:, columns].transpose(1, 0, 2).astype(np.uint8))
    for _ in range(rng.integers(3, 7)):
        height, width = rng.integers(2, 9, size=2)
        steps = rng.integers(-2, 3, size=(length, 2))
        start = rng.integers(0, size - max(height, width), size=2)
        pos = np.clip(start + np.cumsum(steps, axis=0), 0, [size - height, size - width])
        inside_y = (rows[None, :] >= pos[:, :1]) & (rows[None, :] < pos[:, :1] + height)
        inside_x = (rows[None, :] >= pos[:, 1:]) & (rows[None, :] < pos[:, 1:] + width)
        image[inside_y[:, :, None] & inside_x[:, None, :]] = rng.integers(100, 256)
    action = np.zeros((length, actions), np.float32)
    action[np.arange(1, length), rng.integers(actions, size=length - 1)] = 1
    reward = np.where(rng.random(length) < 0.02, 1.0, 0.0).astype(np.float32)
    reward[0] = 0
    is_first = np.zeros(length, bool)
    is_first[0] = True
    is_last = np.zeros(length, bool)
    is_last[-1] = True
    return dict(image=image[..., None], action=action, reward=reward, is_first=is_first,
                is_last=is_last, is_terminal=is_last.copy())


def generate(directory: pathlib.Path, episodes: int, length: int, size: int) -> None:
    existing = len(list_episodes(directory, check=False))
    if existing >= episodes:
        print(f"reusing {existing} episodes in {directory}")
        return
    start = time.perf_counter()
    for index in tqdm.trange(existing, episodes, desc="generating", unit="ep"):
        save_episode(directory, synthetic_episode(length, size, 6, np.random.default_rng([0, index])), index)
    seconds = time.perf_counter() - start
    on_disk = sum(p.stat().st_size for p in directory.glob("*.npz")) / 2**20
    raw = episodes * length * size * size / 2**20
    print(f"generated {episodes - existing} episodes x {length} frames in {seconds:.1f} s: "
          f"{on_disk:.0f} MB compressed on disk ({raw:.0f} MB of raw uint8 images)")


def mmap_sample(sampler, i: int, maps: dict) -> dict[str, np.ndarray]:
    """Batch i read through np.memmap views of the cache files (for comparison only)."""
    out = {}
    episodes, starts = sampler.sample_indices(i)
    for key in sampler.keys:
        rows = []
        for e, start in zip(episodes, starts):
            episode = sampler.episodes[e]
            if (e, key) not in maps:
                array = episode.arrays[key]
                maps[e, key] = np.memmap(episode.cache, array.dtype, "r", array.offset, array.shape)
            rows.append(np.array(maps[e, key][start : start + sampler.length]))
        out[key] = np.stack(rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=pathlib.Path, help="episode directory (default: temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated directory")
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=50)
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--compare-mmap", action="store_true")
    parser.add_argument("--cold", action="store_true",
                        help="evict the cache files from the page cache first (reads hit the disk)")
    args = parser.parse_args()

    directory = args.dir or pathlib.Path(tempfile.mkdtemp(prefix="ditto_dataset_bench_"))
    try:
        print(f"start: {memory_mb()}")
        generate(directory, args.episodes, args.length, args.size)

        import tensorflow as tf  # after generation: its import is part of the measured baseline

        from ditto_tf.data.dataset import SequenceSampler

        tf.constant(0)
        print(f"after importing TensorFlow: {memory_mb()}")
        reset_peak()
        start = time.perf_counter()
        sampler = SequenceSampler(directory, args.batch, args.seq, seed=0,
                                  limit=args.episodes)
        cache_mb = sum(e.cache.stat().st_size for e in sampler.episodes) / 2**20
        print(f"sampler over {sampler.num_episodes} episodes, {sampler.num_steps} frames: "
              f"{time.perf_counter() - start:.1f} s (cache {cache_mb:.0f} MB on disk); {memory_mb()}")

        if args.cold:  # POSIX_FADV_DONTNEED drops only these files' pages, nobody else's
            for episode in sampler.episodes:
                fd = os.open(episode.cache, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
        reset_peak()
        dataset = sampler.dataset()
        iterator = iter(dataset)
        for _ in range(10):  # warm-up: tracing and the first prefetches
            next(iterator)
        start = time.perf_counter()
        checksum = 0
        for _ in tqdm.trange(args.batches, desc="sampling (tf.data, pread)", unit="batch"):
            batch = next(iterator)
            checksum += int(batch["image"][0, 0, 0, 0, 0])
        seconds = time.perf_counter() - start
        memory = memory_mb()
        print(f"tf.data + pread{' (cold page cache)' if args.cold else ''}: "
              f"{args.batches / seconds:.1f} batches/s "
              f"({args.batch}x{args.seq}, {args.batches} batches in {seconds:.1f} s); "
              f"peak RSS {memory['VmHWM']:.0f} MB, RSS {memory['VmRSS']:.0f} MB")
        del iterator, dataset

        if args.compare_mmap:
            reset_peak()
            before = memory_mb()["VmRSS"]
            maps: dict = {}
            start = time.perf_counter()
            for i in tqdm.trange(args.batches, desc="sampling (numpy, mmap)", unit="batch"):
                mmap_sample(sampler, 10 + i, maps)
            seconds = time.perf_counter() - start
            memory = memory_mb()
            print(f"np.memmap (for comparison): {args.batches / seconds:.1f} batches/s; "
                  f"RSS grew {memory['VmRSS'] - before:.0f} MB to {memory['VmRSS']:.0f} MB "
                  f"(peak {memory['VmHWM']:.0f} MB): mapped pages count as resident")
    finally:
        if args.dir is None and not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
        elif args.keep or args.dir:
            print(f"episodes kept in {directory}")


if __name__ == "__main__":
    main()
