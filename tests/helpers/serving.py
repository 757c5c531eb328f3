"""Search-service test helpers: request bodies (a JPEG, a decompression bomb), a poller
of the public port, and a bundle copy whose retrieval fails its smoke test."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from pipelines.deploy.loadrun import jpeg_bytes
from pipelines.deploy.loadrun import png_bomb as _png_bomb
from pipelines.settings import Settings


def jpeg(size=(120, 90), color=(200, 40, 40)) -> bytes:
    return jpeg_bytes(size, color, quality=75)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    return _png_bomb(width, height)


@contextmanager
def polled(s: Settings, every_s: float = 0.1) -> Iterator[Counter]:
    """GET /info on the public port every ``every_s`` while the block runs; yields the
    count of each outcome (status code, or the exception's name)."""
    seen: Counter = Counter()
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                try:
                    seen[c.get(s.url(s.bento_port, "/info")).status_code] += 1
                except httpx.HTTPError as exc:
                    seen[type(exc).__name__] += 1
                time.sleep(every_s)

    t = threading.Thread(target=poll)
    t.start()
    try:
        yield seen
    finally:
        stop.set()
        t.join()


def broken_copy(src: Path, out: Path, version: str) -> Path:
    """Same models, but an index whose vectors are random: retrieval (the smoke test) fails."""
    shutil.copytree(src, out)
    vec = np.load(out / "index" / "vectors.npy")
    rnd = np.random.default_rng(1).normal(size=vec.shape).astype(np.float32)
    np.save(out / "index" / "vectors.npy", rnd / np.linalg.norm(rnd, axis=1, keepdims=True))
    m = json.loads((out / "manifest.json").read_text())
    m["versions"]["index"] = version
    m["id"] = version
    (out / "manifest.json").write_text(json.dumps(m))
    return out


def served_versions(s: Settings) -> dict:
    """The model and index versions the public port serves (GET /info)."""
    return httpx.get(s.url(s.bento_port, "/info"), timeout=10).json()["versions"]
