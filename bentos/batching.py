"""Adaptive in-process batching for the image-level models (detector + parser).

Requests run in the service's thread pool; each hands its photo to one :class:`MicroBatcher`
and waits. A worker thread takes everything queued at the moment it becomes free (up to
``max_batch``) and runs one batched forward pass. There is no waiting window: a lone
request runs at once, and under load the requests that arrive during one pass share the
next, so the batch size follows the load. The models' ``predict`` is batch-invariant
(fixed-size canvases), so batching changes throughput, never a result.

``workers`` > 1 keeps that many batches in flight. On CPU one forward pass leaves cores
idle in its single-threaded stretches (Python glue, RetinaNet's per-image post-processing,
the parser's per-image resize); a second batch fills them. Measured on 2 cores
(``tailor bench serve``): one worker with batches of 8 served ~13-15 photos/s at
concurrency 16, two workers with batches of 4 ~16-17.5.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class MicroBatcher:
    """``batcher(item) -> result``, grouping concurrent calls into ``fn(items) -> results``."""

    def __init__(
        self, fn: Callable[[list[Any]], list[Any]], max_batch: int = 8, name: str = "batcher", workers: int = 1
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.fn = fn
        self.max_batch = max_batch
        self.batches = 0  # forward passes run
        self.items = 0  # items served; items / batches is the mean batch size
        self._q: queue.Queue[tuple[Any, Future]] = queue.Queue()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def __call__(self, item: Any) -> Any:
        fut: Future = Future()
        self._q.put((item, fut))
        return fut.result()

    def _run(self) -> None:
        while True:
            batch = [self._q.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            try:
                results = self.fn([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batched call returned {len(results)} results for {len(batch)} items")
            except BaseException as exc:  # every waiting request gets the error, the worker lives on
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            with self._lock:
                self.batches += 1
                self.items += len(batch)
            for (_, fut), res in zip(batch, results, strict=True):
                fut.set_result(res)
