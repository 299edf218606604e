"""CPU process pools for per-image CPU work (dense CRFs of the IR-label steps and of eval_seg).

Spawn context (safe after torch/CUDA initialisation), one thread per worker: the CRF is single-
threaded C++, and several torch threads per worker would only oversubscribe the cores.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from multiprocessing.pool import Pool


def _one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def cpu_pool(workers: int) -> Pool:
    """A spawn-context Pool of `workers` single-threaded processes (use as a context manager)."""
    return mp.get_context("spawn").Pool(workers, initializer=_one_thread)
