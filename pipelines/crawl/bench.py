"""``tailor bench crawl``: crawler throughput on loopback and politeness as measured.

Two runs against one demo mall served on 127.0.0.1:

1. politeness off (no delay, concurrency 16, Crawl-delay ignored): pages/s and images/s
   over the spider's own run time (interpreter start-up excluded, reported separately),
   for one mall and for all demo malls crawled in parallel (one process each, as the DAG
   runs them; the figure is over the window from the first start to the last finish);
2. politeness on (``delay_s``, concurrency 1): the request rate the mall's request log
   measured, against the configured one (1 / delay).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any


def _world(directory: Path, products: int, seed: int) -> Path:
    """A world of ``products`` catalog products and no street scenes (the crawl reads only
    the catalog), from the synthetic generator."""
    from pipelines.synth import WorldConfig, generate_world

    return Path(generate_world(directory, WorldConfig(seed=seed, n_products=products, n_scenes=0)))


def run_benchmark(
    products: int = 400,
    delay_s: float = 0.2,
    polite_pages: int = 25,
    seed: int = 0,
    world: Path | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run both measurements, print a summary and return the figures."""
    from pipelines.crawl.config import Politeness, demo_config
    from pipelines.crawl.pipeline import crawl
    from pipelines.crawl.state import Store
    from pipelines.malls import build_demo_malls
    from pipelines.malls.server import MallServer
    from pipelines.settings import Settings

    with tempfile.TemporaryDirectory(prefix="tailor-bench-") as tmp_s:
        tmp = Path(tmp_s)
        w = Path(world) if world else _world(tmp / "world", products, seed)
        mall = build_demo_malls(w, seed=seed, duplicate_share=0.0)[0]
        s = Settings(root=tmp / "proj")
        res: dict[str, Any] = {"mall": mall.name, "products": len(mall.listings)}
        malls = build_demo_malls(w, seed=seed, duplicate_share=0.0)
        with MallServer(malls) as server:
            # All demo malls at once, one crawler process each (how crawl() and the DAG run).
            cfg_all = demo_config({m.name: server.url(m.name) for m in malls}, Politeness.off())
            info = crawl(cfg_all, out=tmp / "all", s=s, state=tmp / "state-all", dvc=False)
            starts, ends, pages, images = [], [], 0, 0
            for m in malls:
                with Store(Path(tmp / "state-all" / "runs" / "all" / m.name / "run.sqlite")) as st:
                    starts.append(st.get_meta("started_at"))
                    ends.append(st.get_meta("finished_at"))
                pages += info["stats"]["malls"][m.name]["pages"]
                images += info["stats"]["malls"][m.name]["images"]
            window = max(ends) - min(starts)
            res["parallel"] = {
                "malls": len(malls),
                "pages": pages,
                "images": images,
                "run_s": round(window, 3),
                "pages_per_s": round(pages / window, 1),
                "images_per_s": round(images / window, 1),
            }
        with MallServer([mall]) as server:
            cfg = demo_config({mall.name: server.url(mall.name)}, Politeness.off())
            t0 = time.perf_counter()
            info = crawl(cfg, out=tmp / "fast", s=s, state=tmp / "state-fast", dvc=False)
            wall = time.perf_counter() - t0
            with Store(Path(tmp / "state-fast" / "runs" / "fast" / mall.name / "run.sqlite")) as st:
                run_s = st.get_meta("finished_at") - st.get_meta("started_at")
            m = info["stats"]["malls"][mall.name]
            res["off"] = {
                "pages": m["pages"],
                "images": m["images"],
                "run_s": round(run_s, 3),
                "wall_s": round(wall, 3),
                "pages_per_s": round(m["pages"] / run_s, 1),
                "images_per_s": round(m["images"] / run_s, 1),
                "requests_per_s": round(m["requests"] / run_s, 1),
                "server_rate": round(server.log(mall.name).request_rate(), 1),
            }
            server.log(mall.name).clear()
            pol = Politeness(
                concurrency_per_domain=1,
                delay_s=delay_s,
                max_pages=polite_pages,
                obey_crawl_delay=False,
                user_agent="TailorBot/1.0 (+https://example.org/bot)",
            )
            crawl(
                demo_config({mall.name: server.url(mall.name)}, pol),
                out=tmp / "polite",
                s=s,
                state=tmp / "state-polite",
                dvc=False,
            )
            entries = [e for e in server.log(mall.name).entries if e.path != "/robots.txt"]
            ts = sorted(e.t for e in entries)
            rate = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 0.0
            gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
            res["polite"] = {
                "configured_rate": round(1 / delay_s, 3) if delay_s else None,
                "measured_rate": round(rate, 3),
                "requests": len(ts),
                "min_gap_s": round(min(gaps), 3) if gaps else None,
                "median_gap_s": round(sorted(gaps)[len(gaps) // 2], 3) if gaps else None,
            }
    if not quiet:
        off, pol_r = res["off"], res["polite"]
        print(f"crawl benchmark ({res['mall']}, {res['products']} products, loopback)")
        print(
            f"  politeness off : {off['pages_per_s']:.1f} pages/s, {off['images_per_s']:.1f} images/s "
            f"({off['pages']} pages, {off['images']} images in {off['run_s']:.2f}s; "
            f"{off['wall_s']:.2f}s with interpreter start-up)"
        )
        par = res["parallel"]
        print(
            f"  politeness off, {par['malls']} malls in parallel: {par['pages_per_s']:.1f} pages/s, "
            f"{par['images_per_s']:.1f} images/s ({par['pages']} pages, {par['images']} images in {par['run_s']:.2f}s)"
        )
        print(
            f"  politeness on  : measured {pol_r['measured_rate']:.2f} req/s vs configured "
            f"{pol_r['configured_rate']} req/s (median gap {pol_r['median_gap_s']}s, min {pol_r['min_gap_s']}s, "
            f"over {pol_r['requests']} requests)"
        )
        print(json.dumps(res))
    return res
