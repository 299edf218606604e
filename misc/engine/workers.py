"""CPU process pools for per-image CPU work (dense CRFs of the IR-label steps,
of PPMG and of eval_seg).

Spawn context (safe after torch/CUDA initialisation), one thread per worker: the CRF is single-
threaded C++, and several torch threads per worker would only oversubscribe the cores.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections import deque
from multiprocessing.pool import Pool
from typing import Any, Callable, Iterable, Iterator, Sequence

from tqdm import tqdm


def _one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def cpu_pool(workers: int) -> Pool:
    """A spawn-context Pool of `workers` single-threaded processes (use as a context manager)."""
    return mp.get_context("spawn").Pool(workers, initializer=_one_thread)


def map_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], num_workers: int, desc: str,
             min_jobs_for_pool: int) -> Iterator[Any]:
    """Yield `fn(job)` for every job, in completion order, with a progress bar.

    Runs in this process when `num_workers` <= 1 or there are fewer than `min_jobs_for_pool`
    jobs (a spawned worker costs about a second to start), otherwise over `cpu_pool`. `fn` must
    be a module-level function and the jobs picklable.
    """
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=None)
    try:
        if num_workers <= 1 or len(jobs) < min_jobs_for_pool:
            for job in jobs:
                yield fn(job)
                bar.update(1)
        else:
            workers = min(int(num_workers), len(jobs))
            chunk = max(1, min(16, len(jobs) // (workers * 4)))
            with cpu_pool(workers) as pool:
                for result in pool.imap_unordered(fn, jobs, chunksize=chunk):
                    yield result
                    bar.update(1)
    finally:
        bar.close()


def map_streamed(fn: Callable[[Any], Any], jobs: Iterable[Any], num_workers: int,
                 ahead: int = 2) -> Iterator[tuple[Any, Any]]:
    """Yield `(job, fn(job))` in the jobs' order while `jobs` is still being produced (by a
    network's loop, say): a job is drawn only while fewer than `ahead` per worker are in
    flight, so the producer runs at most that far ahead of the CPU work and memory stays
    bounded. In this process when `num_workers` <= 1, otherwise over `cpu_pool`; `fn` must be a
    module-level function and the jobs picklable."""
    if num_workers <= 1:
        for job in jobs:
            yield job, fn(job)
        return
    pending: deque = deque()
    with cpu_pool(int(num_workers)) as pool:
        for job in jobs:
            pending.append((job, pool.apply_async(fn, (job,))))
            while len(pending) > ahead * num_workers:
                done, result = pending.popleft()
                yield done, result.get()
        while pending:
            done, result = pending.popleft()
            yield done, result.get()
