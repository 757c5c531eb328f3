"""``tailor bench serve``: latency, throughput, batching on/off and a load run of the real server.

One run starts ``bentoml serve`` of one bundle on a free loopback port several times: with
adaptive batching at the configured concurrency limit (``runtime.image_workers`` forward
passes in flight), then without batching at that same limit and at the others in
``unbatched_workers``. Each gets single-garment photos (the world's shop images) at
concurrency 1, 4 and 16 and street scenes (several garments each) at 1 and 16; the table
has p50/p95/p99 latency per image and throughput. The batching ratio at concurrency 16 is
taken against the best unbatched server (and, for reference, the one at the same limit).
With batching on it then holds 80% of the measured maximum throughput open-loop for
``duration_s`` (default 300 s; latency from when each request was due) and reports the
errors and the server's memory (RSS of its whole process tree) at start and end.
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

    def __init__(self, bundle: Path, batching: bool, image_workers: int) -> None:
        from pipelines import services
        from pipelines.deploy.release import server_service

        self.s = get_settings()
        self.port = services.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        svc = server_service(
            f"bench-{'batched' if batching else 'unbatched'}-w{image_workers}",
            {"bundle": str(bundle)},
            self.port,
            self.s,
            startup_timeout_s=400,
        )
        env = {
            "TAILOR_SERVE_BATCHING": "true" if batching else "false",
            "TAILOR_SERVE_IMAGE_WORKERS": str(image_workers),
        }
        self.svc = replace(svc, env={**svc.env, **env})
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
    url: str,
    images: list[bytes],
    rate: float,
    duration_s: float,
    rss_mb: Callable[[], float] | None = None,
    max_in_flight: int = 64,
) -> dict[str, Any]:
    """Open-loop load: request ``i`` is due at ``i / rate`` seconds and its latency runs from
    then, not from when a client thread picks it up, so a server that falls behind shows
    the queueing it causes (a closed loop would slow down with it and hide it). Errors,
    latency and, with ``rss_mb``, the server's memory at start and end."""
    client = httpx.Client(limits=httpx.Limits(max_connections=max_in_flight + 4))
    mem_start = rss_mb() if rss_mb else 0.0
    errors, done, lat = 0, 0, []
    lock = threading.Lock()

    def fire(i: int, due: float) -> None:
        nonlocal errors, done
        _, ok = _one(client, url, images[i % len(images)])
        end = time.perf_counter()
        with lock:
            done += 1
            lat.append((end - due) * 1000)
            errors += 0 if ok else 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_in_flight) as pool:
        i = 0
        while (now := time.perf_counter() - t0) < duration_s:
            while i / rate <= now:  # request i is due at i / rate
                pool.submit(fire, i, t0 + i / rate)
                i += 1
            time.sleep(0.002)
    client.close()
    mem_end = rss_mb() if rss_mb else 0.0
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


def _images(world: Path, role: str, n: int = 32) -> list[bytes]:
    paths = sorted((world / "images" / role).glob("*.jpg"))[:n]
    if not paths:
        raise RuntimeError(f"no {role} images under {world}/images/{role}")
    return [p.read_bytes() for p in paths]


def server_settings(image_workers: int, unbatched_workers: tuple[int, ...]) -> list[tuple[str, bool, int]]:
    """The servers one benchmark starts: (name, batching, image_workers). Batching runs at the
    configured concurrency limit; unbatched runs at that same limit and at every other one in
    ``unbatched_workers``, so the baseline is the best unbatched setting, not a strawman."""
    limits = sorted({image_workers, *unbatched_workers})
    return [(f"batched-w{image_workers}", True, image_workers)] + [(f"unbatched-w{w}", False, w) for w in limits]


def bench_serve(
    bundle: Path | None = None,
    world: Path | None = None,
    duration_s: float = 300.0,
    n_requests: int = 192,
    levels: tuple[int, ...] = (1, 4, 16),
    unbatched_workers: tuple[int, ...] = (1, 2, 4),
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """The whole benchmark (see module docstring); returns the figures and prints a table."""
    from pipelines.serving_config import load_config

    s = get_settings()
    if bundle is None:
        from .release import read_state, release_info

        cur = read_state(s).get("current")
        if not cur:
            raise RuntimeError("no current release: pass --bundle or deploy first")
        bundle = Path(release_info(cur, s)["bundle"])
    world = Path(world or s.demo_world_dir)
    queries = {"shop": _images(world, "shop"), "street": _images(world, "street")}
    top = levels[-1]
    workers = int(load_config()["runtime"]["image_workers"])
    report: dict[str, Any] = {"cpu_count": os.cpu_count(), "bundle": str(bundle), "runs": {}}
    # A SIGTERM (a killed benchmark) must still run the ``finally`` that stops the servers.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for name, batching, w in server_settings(workers, unbatched_workers):
        server = _Server(bundle, batching, w)
        try:
            rows = []
            for kind, images in queries.items():
                # Street scenes (several garments each) at concurrency 1 and the top level.
                for c in levels if kind == "shop" else (levels[0], top):
                    r = {
                        "queries": kind,
                        **measure(server.url, images, c, n_requests if c > 1 else max(16, n_requests // 2)),
                    }
                    rows.append(r)
                    echo(
                        f"{name:13s} {kind:6s} c={c:<3d} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  "
                        f"p99 {r['p99_ms']:7.1f} ms  {r['throughput_rps']:6.2f} img/s  errors {r['errors']}"
                    )
            report["runs"][name] = {"batching": batching, "image_workers": w, "rows": rows}
            if batching and duration_s > 0:
                best = max(r["throughput_rps"] for r in rows if r["queries"] == "shop")
                report["load"] = load_run(server.url, queries["shop"], 0.8 * best, duration_s, server.rss_mb)
        finally:
            server.stop()

    def at_top(name: str, kind: str) -> float:
        rows = report["runs"][name]["rows"]
        return next(r["throughput_rps"] for r in rows if r["queries"] == kind and r["concurrency"] == top)

    batched = f"batched-w{workers}"
    unbatched = [n for n, run in report["runs"].items() if not run["batching"]]
    for kind in queries:
        best = max(unbatched, key=lambda n: at_top(n, kind))
        ratio = at_top(batched, kind) / max(at_top(best, kind), 1e-9)
        same = at_top(batched, kind) / max(at_top(f"unbatched-w{workers}", kind), 1e-9)
        report[f"batching_ratio_{kind}"] = {
            "vs_best_unbatched": round(ratio, 2),
            "best_unbatched": best,
            "vs_equal_limit": round(same, 2),
        }
        echo(
            f"{kind}: batching at c={top} {ratio:.2f}x the best unbatched server ({best}), "
            f"{same:.2f}x unbatched at the same limit (w{workers}) (goal >= 1.5x)"
        )
    if "load" in report:
        ld = report["load"]
        echo(
            f"open-loop load {ld['duration_s']:.0f}s at {ld['rate_rps']} req/s: {ld['requests']} requests, "
            f"errors {ld['errors']}, p50 {ld['p50_ms']} ms p99 {ld['p99_ms']} ms from due time, "
            f"memory {ld['mem_start_mb']} -> {ld['mem_end_mb']} MiB ({ld['mem_growth_pct']:+.1f}%)"
        )
    return report
