"""``tailor bench load``: a long mixed load on the deployed search endpoint (issue 14).

Good photos (the demo world's shop images and street scenes, and real garment photos when
``../shared`` has them) are interleaved with the bad-input set that ``/search`` must refuse
with a 4xx: an empty body, text, a pickle, a truncated JPEG, a PNG decompression bomb, a
photo over the pixel cap, an extreme aspect ratio, a body over the byte cap sent in one
piece and one sent chunked. Requests run at a fixed rate for ``duration_s``; the server's
resident memory (its whole process tree: the Bento slot behind the gateway, or a server
this command starts) is sampled twice a second.

Reported: requests served, status counts, 5xx count (must be 0), unexpected answers (a bad
input that was not refused, a good photo that was), p50/p99 latency of the good photos,
and the peak RSS against the documented bound (``RSS_BOUND_MB``: the serving pod's 3 GiB
memory limit in ``bentos/k8s/deployment.yaml``).
"""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

#: the serving pod's memory limit (bentos/k8s/deployment.yaml): the load run's peak RSS bound
RSS_BOUND_MB = 3072.0


def jpeg_bytes(size: tuple[int, int], color: tuple[int, int, int] = (180, 60, 60), quality: int = 85) -> bytes:
    """A plain JPEG of ``size`` (bench and tests build their inputs with it)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def bad_inputs(max_bytes: int = 10 * 2**20) -> list[tuple[str, bytes | Callable[[], Iterator[bytes]]]]:
    """``(name, body)`` of inputs ``/search`` must refuse with a 4xx; a callable body is sent chunked."""
    over = b"\xff\xd8" + b"\0" * (max_bytes + 1024)

    def chunked() -> Iterator[bytes]:
        for i in range(0, len(over), 2**16):
            yield over[i : i + 2**16]

    return [
        ("empty", b""),
        ("text", b"definitely not an image"),
        ("pickle", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."),
        ("truncated_jpeg", jpeg_bytes((400, 400))[:700]),
        ("png_bomb", png_bomb()),
        ("too_many_pixels", jpeg_bytes((4200, 3000), quality=30)),  # 12.6 MP > the 12 MP cap
        ("extreme_aspect", jpeg_bytes((2200, 100))),
        ("over_byte_cap", over),
        ("over_byte_cap_chunked", chunked),
    ]


def good_photos(world: Path, photos: Path | None, n: int = 48) -> list[tuple[str, bytes]]:
    """Shop shots and street scenes of the world, and real photos when available."""
    files = sorted((world / "images" / "shop").glob("*.jpg"))[: n // 3]
    files += sorted((world / "images" / "street").glob("*.jpg"))[: n // 3]
    if photos is not None and (photos / "images").is_dir():
        files += sorted((photos / "images").glob("*.jpg"))[: n // 3]
    if not files:
        raise RuntimeError(f"no photos under {world}/images")
    return [(f.name, f.read_bytes()) for f in files]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` and all its descendants, MiB (0 when it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


class RssSampler:
    """Peak resident memory of a process tree, sampled every ``every_s`` in a thread."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        self.pid, self.every_s = pid, every_s
        self.peak_mb = self.start_mb = self.last_mb = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def rss_mb(self) -> float:
        return tree_rss_mb(self.pid)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.last_mb = self.rss_mb()
            self.peak_mb = max(self.peak_mb, self.last_mb)
            self._stop.wait(self.every_s)

    def __enter__(self) -> RssSampler:
        self.start_mb = self.peak_mb = self.rss_mb()
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()


def load_mixed(
    url: str,
    server_pid: int,
    good: list[tuple[str, bytes]],
    duration_s: float = 600.0,
    rate: float = 4.0,
    bad_every: int = 3,
    concurrency: int = 16,
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """``rate`` requests/s for ``duration_s`` at ``url``/search; every ``bad_every``-th is a bad input."""
    bad = bad_inputs()
    statuses: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    lat_good: list[float] = []
    lock = threading.Lock()
    client = httpx.Client(limits=httpx.Limits(max_connections=concurrency + 4), timeout=120)

    def fire(i: int) -> None:
        if i % bad_every == bad_every - 1:
            name, body = bad[(i // bad_every) % len(bad)]
            is_bad = True
        else:
            name, body = good[i % len(good)]
            is_bad = False
        t = time.perf_counter()
        try:
            if callable(body):  # chunked transfer: no Content-Length, the server must count
                boundary = "tailorloadboundary"
                head = (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
                    "Content-Type: image/jpeg\r\n\r\n"
                ).encode()

                def stream(b: Callable[[], Iterator[bytes]] = body) -> Iterator[bytes]:
                    yield head
                    yield from b()
                    yield f"\r\n--{boundary}--\r\n".encode()

                r = client.post(
                    f"{url}/search",
                    content=stream(),
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                )
            else:
                r = client.post(f"{url}/search", files={"image": (name, body, "image/jpeg")}, data={"k": "5"})
            code = str(r.status_code)
        except httpx.HTTPError as exc:
            code = type(exc).__name__
        dt = (time.perf_counter() - t) * 1000
        with lock:
            statuses[code] += 1
            if is_bad and not code.startswith("4"):
                unexpected[f"{name}: {code}"] += 1
            elif not is_bad:
                if code == "200":
                    lat_good.append(dt)
                else:
                    unexpected[f"good {name}: {code}"] += 1

    t0 = time.perf_counter()
    last_echo = t0
    with RssSampler(server_pid) as rss, ThreadPoolExecutor(concurrency) as pool:
        i = 0
        while (now := time.perf_counter() - t0) < duration_s:
            while i < int(now * rate):
                pool.submit(fire, i)
                i += 1
            if time.perf_counter() - last_echo > 60:
                last_echo = time.perf_counter()
                echo(
                    f"  {now:5.0f}s: {sum(statuses.values())} answered, {dict(statuses)}, RSS {rss.last_mb:.0f} MiB "
                    f"(peak {rss.peak_mb:.0f})"
                )
            time.sleep(0.01)
    client.close()
    lat = np.array(lat_good) if lat_good else np.zeros(1)
    n5xx = sum(v for k, v in statuses.items() if k.startswith("5"))
    return {
        "url": url,
        "duration_s": duration_s,
        "rate_rps": rate,
        "requests": sum(statuses.values()),
        "statuses": dict(statuses),
        "5xx": n5xx,
        "unexpected": dict(unexpected),
        "good_p50_ms": round(float(np.percentile(lat, 50)), 1),
        "good_p99_ms": round(float(np.percentile(lat, 99)), 1),
        "rss_start_mb": round(rss.start_mb, 1),
        "rss_peak_mb": round(rss.peak_mb, 1),
        "rss_bound_mb": RSS_BOUND_MB,
        "rss_within_bound": rss.peak_mb < RSS_BOUND_MB,
    }


def bench_load(duration_s: float = 600.0, rate: float = 4.0, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """The mixed load run against the deployed endpoint (the gateway's public port); the
    sampled process is the live Bento slot."""
    from pipelines.settings import get_settings

    from .release import live_slot, read_state, slot_pid

    s = get_settings()
    state = read_state(s)
    slot = live_slot(state)
    if not slot:
        raise RuntimeError("nothing is deployed: run `tailor deploy run` (or `make demo`) first")
    pid = slot_pid(slot, s)
    if pid is None:
        raise RuntimeError(f"the live slot {slot} is not running: `tailor up` brings it back")
    good = good_photos(Path(s.demo_world_dir), s.demo_photos_dir)
    echo(
        f"load run: {duration_s:.0f}s at {rate} req/s on {s.url(s.bento_port)} (slot {slot}, pid {pid}), "
        f"{len(good)} good photos, {len(bad_inputs())} kinds of bad input every 3rd request"
    )
    rep = load_mixed(s.url(s.bento_port), pid, good, duration_s, rate, echo=echo)
    echo(
        f"served {rep['requests']} requests: {rep['statuses']}; 5xx {rep['5xx']}; unexpected {rep['unexpected'] or 'none'}; "
        f"good photos p50 {rep['good_p50_ms']} ms, p99 {rep['good_p99_ms']} ms; "
        f"RSS {rep['rss_start_mb']} -> peak {rep['rss_peak_mb']} MiB (bound {RSS_BOUND_MB:.0f})"
    )
    return rep
