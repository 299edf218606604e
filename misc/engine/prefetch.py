"""Drawing the next item of an iterator in a background thread while the caller works.

On a CPU, torch releases the GIL inside its kernels, so drawing the next synthetic batch (numpy /
PIL) overlaps the current step instead of waiting for it. One thread consumes the iterator in
order, so a seeded iterator yields exactly what a plain loop would. The synthetic pretraining
uses it; the training loop does not, since behind a DataLoader it was slower
(docs/measurements.md).
"""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


def ahead(items: Iterable[T], name: str = "prefetch") -> Iterator[T]:
    """Yield the items of `items`, the next one produced in a thread while the caller holds the
    current one. An exception in the producer is raised in the caller; closing the generator
    (or leaving it early) stops the thread after at most one surplus item."""
    ready: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((_DONE, None))
        except BaseException as error:  # re-raised in the caller
            offer((None, error))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def drawn_ahead(items: Iterable[T], name: str = "prefetch") -> Iterator[Iterator[T]]:
    """`with drawn_ahead(items) as it:` iterates `items` through `ahead` and stops its thread on
    leaving the block, also on an exception."""
    drawn = ahead(items, name)
    try:
        yield drawn
    finally:
        drawn.close()
