"""``tailor bench serve``: latency, throughput, batching on/off and a load run of the real server.

One run starts ``bentoml serve`` twice on a free loopback port (adaptive batching on, then
off), sends single-garment photos (the world's shop images) at concurrency 1, 4 and 16,
and prints p50/p95/p99 latency per image and throughput for each. With batching on it then
holds 80% of the measured maximum throughput for ``duration_s`` (default 300 s) and reports
the error count and the server's memory (RSS of its whole process tree) at start and end.
Goals on 2 cores: p50 <= 200 ms at concurrency 1; batching >= 1.5x throughput at
concurrency 16; zero errors and < 10% memory growth in the load run.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from pipelines.settings import get_settings


class _Server:
    """``bentoml serve`` of one bundle on a free port, started and stopped through the same
    :mod:`pipelines.services` mechanics as deployments (process group, pid file, log, health)."""

    def __init__(self, bundle: Path, batching: bool) -> None:
        from pipelines import services
        from pipelines.deploy.release import server_service

        self.s = get_settings()
        self.port = services.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        svc = server_service(
            f"bench-batching-{'on' if batching else 'off'}",
            {"bundle": str(bundle)},
            self.port,
            self.s,
            startup_timeout_s=400,
        )
        self.svc = replace(svc, env={**svc.env, "TAILOR_SERVE_BATCHING": "true" if batching else "false"})
        self.log = self.svc.log_file(self.s)
        self.pid = services.start(self.svc, self.s, already_running_ok=False)["pid"]

    def rss_mb(self) -> float:
        """Resident memory of the server's whole process tree, MiB."""
        from .loadrun import tree_rss_mb

        return tree_rss_mb(self.pid)

    def stop(self) -> None:
        from pipelines import services

        services.stop(self.svc, self.s)


def _one(client: httpx.Client, url: str, img: bytes) -> tuple[float, bool]:
    t = time.perf_counter()
    try:
        r = client.post(f"{url}/search", files={"image": ("q.jpg", img, "image/jpeg")}, data={"k": "10"}, timeout=120)
        ok = r.status_code == 200
    except httpx.HTTPError:
        ok = False
    return time.perf_counter() - t, ok


def measure(url: str, images: list[bytes], concurrency: int, n: int) -> dict[str, Any]:
    """``n`` requests with ``concurrency`` in flight; latency percentiles (ms) and throughput."""
    client = httpx.Client(limits=httpx.Limits(max_connections=concurrency + 4))
    for img in images[:2]:  # warm-up (lazy init, connection pool)
        _one(client, url, img)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        res = list(pool.map(lambda i: _one(client, url, images[i % len(images)]), range(n)))
    wall = time.perf_counter() - t0
    client.close()
    lat = np.array([r[0] for r in res]) * 1000
    return {
        "concurrency": concurrency,
        "n": n,
        "errors": int(sum(not r[1] for r in res)),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "throughput_rps": round(n / wall, 2),
    }


def load_run(
    server: _Server, images: list[bytes], rate: float, duration_s: float, concurrency: int = 16
) -> dict[str, Any]:
    """Open-loop requests at ``rate`` per second for ``duration_s``; errors and memory."""
    client = httpx.Client(limits=httpx.Limits(max_connections=concurrency + 4))
    mem_start = server.rss_mb()
    errors, done, lat = 0, 0, []
    lock = threading.Lock()

    def fire(i: int) -> None:
        nonlocal errors, done
        dt, ok = _one(client, server.url, images[i % len(images)])
        with lock:
            done += 1
            lat.append(dt * 1000)
            errors += 0 if ok else 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        i = 0
        while (now := time.perf_counter() - t0) < duration_s:
            target = int(now * rate)
            while i < target:
                pool.submit(fire, i)
                i += 1
            time.sleep(0.005)
    client.close()
    mem_end = server.rss_mb()
    arr = np.array(lat) if lat else np.zeros(1)
    return {
        "rate_rps": round(rate, 2),
        "duration_s": duration_s,
        "requests": done,
        "errors": errors,
        "p50_ms": round(float(np.percentile(arr, 50)), 1),
        "p99_ms": round(float(np.percentile(arr, 99)), 1),
        "mem_start_mb": round(mem_start, 1),
        "mem_end_mb": round(mem_end, 1),
        "mem_growth_pct": round(100 * (mem_end - mem_start) / max(mem_start, 1e-9), 2),
    }


def bench_serve(
    bundle: Path | None = None,
    world: Path | None = None,
    duration_s: float = 300.0,
    n_requests: int = 192,
    levels: tuple[int, ...] = (1, 4, 16),
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """The whole benchmark (see module docstring); returns the figures and prints a table."""
    s = get_settings()
    if bundle is None:
        from .release import read_state, release_info

        cur = read_state(s).get("current")
        if not cur:
            raise RuntimeError("no current release: pass --bundle or deploy first")
        bundle = Path(release_info(cur, s)["bundle"])
    world = Path(world or s.demo_world_dir)
    images = [p.read_bytes() for p in sorted((world / "images" / "shop").glob("*.jpg"))[:32]]
    if not images:
        raise RuntimeError(f"no shop images under {world}/images/shop")
    report: dict[str, Any] = {"cpu_count": os.cpu_count(), "bundle": str(bundle), "runs": {}}
    # A SIGTERM (a killed benchmark) must still run the ``finally`` that stops the servers.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for batching in (True, False):
        key = "batching_on" if batching else "batching_off"
        server = _Server(bundle, batching)
        try:
            rows = [measure(server.url, images, c, n_requests if c > 1 else max(16, n_requests // 2)) for c in levels]
            report["runs"][key] = rows
            for r in rows:
                echo(
                    f"{key:13s} c={r['concurrency']:<3d} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  "
                    f"p99 {r['p99_ms']:7.1f} ms  {r['throughput_rps']:6.2f} img/s  errors {r['errors']}"
                )
            if batching and duration_s > 0:
                best = max(r["throughput_rps"] for r in rows)
                report["load"] = load_run(server, images, 0.8 * best, duration_s)
        finally:
            server.stop()
    on, off = report["runs"]["batching_on"][-1], report["runs"]["batching_off"][-1]
    report["batching_ratio_c16"] = round(on["throughput_rps"] / max(off["throughput_rps"], 1e-9), 2)
    echo(f"batching throughput ratio at c={levels[-1]}: {report['batching_ratio_c16']}x (goal >= 1.5x)")
    if "load" in report:
        ld = report["load"]
        echo(
            f"load {ld['duration_s']:.0f}s at {ld['rate_rps']} req/s: {ld['requests']} requests, errors {ld['errors']}, "
            f"memory {ld['mem_start_mb']} -> {ld['mem_end_mb']} MiB ({ld['mem_growth_pct']:+.1f}%)"
        )
    return report
