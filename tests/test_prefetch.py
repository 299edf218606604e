"""Tests of the background-thread prefetch (misc/engine/prefetch.py)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import data.pretrain_backbone as pb
from misc.engine.prefetch import ahead, drawn_ahead


def test_ahead_yields_what_a_plain_loop_draws_from_a_seeded_generator() -> None:
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    plain = [pb.synthetic_batch(rng_a, 2) for _ in range(3)]
    drawn = list(ahead(pb.synthetic_batch(rng_b, 2) for _ in range(3)))
    assert len(drawn) == 3
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(plain, drawn))
    assert list(ahead([])) == []


def test_a_producer_error_reaches_the_caller_after_the_items_before_it() -> None:
    def items():
        yield 1
        raise ValueError("bad drawing")

    got = []
    with pytest.raises(ValueError, match="bad drawing"):
        for item in ahead(items()):
            got.append(item)
    assert got == [1]


def test_leaving_early_stops_the_thread() -> None:
    drawn = ahead(iter(range(1000)), name="prefetch-test")
    assert next(drawn) == 0
    drawn.close()  # an exception in the caller's step closes it the same way
    assert not any(t.name == "prefetch-test" for t in threading.enumerate())


def test_drawn_ahead_stops_its_thread_when_the_block_raises() -> None:
    with pytest.raises(KeyError):
        with drawn_ahead(iter(range(1000)), name="prefetch-block") as items:
            assert next(items) == 0
            raise KeyError("a failing step")
    assert not any(t.name == "prefetch-block" for t in threading.enumerate())
