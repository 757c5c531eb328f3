"""Merge per-mall run stores into one immutable snapshot directory, and version it.

Snapshot layout::

    products.parquet   one row per product; a product listed by several malls is one row
                       whose ``listings`` / ``also_in`` name every mall listing
    images.parquet     one row per (product, image URL): sha256, size, format, phash, role
    images/<sha[:2]>/<sha>.<ext>   each distinct image once (exact dedup by sha256)
    failures.parquet   every failure of every mall, with kind and reason
    stats.json         pages, images, bytes, errors by kind, duration
    snapshot.json      name, malls, content hash (the DVC id is returned and logged)

Near-duplicate images (perceptual hash within ``near_dup_threshold`` bits) share a
``near_dup_group``; products in different malls are merged when they share an exact
image, or a near-duplicate image and the same SKU.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from pipelines._unionfind import UnionFind
from pipelines.crawl.images import blob_path, image_role
from pipelines.crawl.state import Store
from pipelines.settings import Settings, get_settings

NEAR_DUP_THRESHOLD = 4
SNAPSHOT_FILES = ("products.parquet", "images.parquet", "failures.parquet", "stats.json")


def _near_dup_groups(phashes: dict[str, str], threshold: int) -> dict[str, str]:
    """sha256 -> canonical sha256 of its near-duplicate group (every pair compared).

    64-bit hashes are compared one row against all later ones with numpy (4,919 images of
    the demo malls + photo mall: ~0.2 s instead of ~17 s for the pure-Python pairs); other
    widths fall back to Python ints. Groups are the same either way (a group's id is its
    smallest sha256, whatever the union order).
    """
    uf = UnionFind()
    items = sorted(phashes.items())
    ints = [(sha, int(ph, 16)) for sha, ph in items]
    shas = [sha for sha, _ in ints]
    for sha in shas:
        uf.find(sha)
    if all(h < 1 << 64 for _, h in ints):
        import numpy as np

        vals = np.array([h for _, h in ints], dtype=np.uint64)
        for i in range(len(vals) - 1):
            close = np.flatnonzero(np.bitwise_count(vals[i + 1 :] ^ vals[i]) <= threshold)
            for j in close:
                uf.union(shas[i], shas[i + 1 + int(j)])
    else:
        for i, (a, ha) in enumerate(ints):
            for b, hb in ints[i + 1 :]:
                if bin(ha ^ hb).count("1") <= threshold:
                    uf.union(a, b)
    return {sha: uf.find(sha) for sha in shas}


#: The failure reason of a link robots.txt disallows: crawl policy (cart, account, wishlist
#: links), not an error. Any other ``robots`` reason is a fail-closed robots.txt outcome.
ROBOTS_DISALLOWED = "Disallowed by robots.txt"


def mall_outcome(products: dict[str, dict[str, Any]], failures: list[dict[str, Any]]) -> dict[str, Any]:
    """What one mall's crawl yielded: live products fetched this run, errors, robots outcome.

    ``fetched`` counts products whose page answered in this run (``fetched`` or
    ``not_modified``), not the ones carried over from the previous crawl. ``errors`` are the
    failures other than robots: links robots.txt disallows (``robots_disallowed``) are
    policy, and a robots.txt that could not be fetched is ``robots`` (fail closed: the
    reason every request of the mall was refused with).
    """
    fetched = sum(
        1 for p in products.values() if p.get("status") in ("fetched", "not_modified") and not p.get("removed")
    )
    errors: dict[str, int] = {}
    disallowed = 0
    robots = None
    for f in failures:
        if f.get("kind") != "robots":
            errors[f["kind"]] = errors.get(f["kind"], 0) + 1
        elif f.get("reason") == ROBOTS_DISALLOWED:
            disallowed += 1
        else:
            robots = robots or f.get("reason")
    return {
        "fetched": fetched,
        "errors": sum(errors.values()),
        "errors_by_kind": dict(sorted(errors.items())),
        "robots_disallowed": disallowed,
        "robots": robots,
    }


def merge_runs(mall_dirs: list[str], near_dup_threshold: int = NEAR_DUP_THRESHOLD) -> dict[str, Any]:
    """Read every mall's run store; return product, image and failure rows plus stats."""
    products: dict[str, dict[str, Any]] = {}
    image_by_url: dict[tuple[str, str], dict[str, Any]] = {}
    failures: list[dict[str, Any]] = []
    per_mall: dict[str, Any] = {}
    for d in mall_dirs:
        with Store(Path(d) / "run.sqlite") as st:
            mall = Path(d).name
            prods = st.products()
            imgs = st.images()
            fails = st.failures()
            sstats = st.get_meta("scrapy_stats", {})
            per_mall[mall] = {
                "products": len(prods),
                "removed": sum(1 for p in prods.values() if p["removed"]),
                "pages": st.count("pages"),
                "images": len(imgs),
                "failures": len(fails),
                "close_reason": st.get_meta("close_reason"),
                "limit_hit": st.get_meta("limit_hit", []),
                # set by finalise_mall: why this run may not mark products removed (None: complete)
                "incomplete_reason": st.get_meta("incomplete_reason"),
                "requests": sstats.get("downloader/request_count", 0),
                "bytes": sstats.get("downloader/response_bytes", 0),
                "retries": sstats.get("tailor/retry_count", 0),
                "not_modified": sstats.get("downloader/response_status_count/304", 0),
                "duration_s": round((st.get_meta("finished_at") or 0) - (st.get_meta("started_at") or 0), 3),
                **mall_outcome(prods, fails),
            }
            products.update(prods)
            for url, r in imgs.items():
                image_by_url[(mall, url)] = r
            failures.extend(fails)
    # Image rows per (product, url); only decoded images have a sha256.
    image_rows: list[dict[str, Any]] = []
    for pid, p in sorted(products.items()):
        for pos, url in enumerate(p["image_urls"]):
            r = image_by_url.get((p["mall"], url))
            if not r or not r.get("sha256"):
                continue
            image_rows.append(
                {
                    "sha256": r["sha256"],
                    "width": r["width"],
                    "height": r["height"],
                    "format": r["format"],
                    "phash": r["phash"],
                    "bytes": r["bytes"],
                    "ext": r["ext"],
                    "source_url": url,
                    "product_id": pid,
                    "mall": p["mall"],
                    "role": image_role(url, pos),
                    "position": pos,
                }
            )
    phashes = {r["sha256"]: r["phash"] for r in image_rows}
    groups = _near_dup_groups(phashes, near_dup_threshold)
    for r in image_rows:
        r["near_dup_group"] = groups[r["sha256"]]
    # Product dedup across malls.
    uf = UnionFind()
    by_sha: dict[str, list[str]] = {}
    by_group: dict[str, list[str]] = {}
    for r in image_rows:
        by_sha.setdefault(r["sha256"], []).append(r["product_id"])
        by_group.setdefault(r["near_dup_group"], []).append(r["product_id"])
    for pid in products:
        uf.find(pid)
    for pids in by_sha.values():
        for a in pids[1:]:
            if products[a]["mall"] != products[pids[0]]["mall"]:
                uf.union(pids[0], a)
    for pids in by_group.values():
        for i, a in enumerate(pids):
            for b in pids[i + 1 :]:
                pa, pb = products[a], products[b]
                if pa["mall"] != pb["mall"] and pa.get("sku") and pa.get("sku") == pb.get("sku"):
                    uf.union(a, b)
    clusters: dict[str, list[str]] = {}
    for pid in sorted(products):
        clusters.setdefault(uf.find(pid), []).append(pid)
    shas_of: dict[str, list[str]] = {}
    for r in image_rows:
        shas_of.setdefault(r["product_id"], [])
        if r["sha256"] not in shas_of[r["product_id"]]:
            shas_of[r["product_id"]].append(r["sha256"])
    rows = []
    for canon, members in sorted(clusters.items()):
        p = products[canon]
        listings = [
            {
                "product_id": m,
                "mall": products[m]["mall"],
                "url": products[m]["url"],
                "title": products[m]["title"],
                "price": products[m]["price"],
                "currency": products[m]["currency"],
                "removed": bool(products[m]["removed"]),
            }
            for m in members
        ]
        shas: list[str] = []
        for m in members:
            shas += [x for x in shas_of.get(m, []) if x not in shas]
        rows.append(
            {
                "product_id": canon,
                "mall": p["mall"],
                "url": p["url"],
                "sku": p["sku"],
                "title": p["title"],
                "brand": p["brand"],
                "price": p["price"],
                "currency": p["currency"],
                "category": p["category"],
                "description": p["description"],
                "attributes": json.dumps(p["attributes"], sort_keys=True, ensure_ascii=False),
                "image_urls": list(p["image_urls"]),
                "image_sha256": shas,
                "fetched_at": p["fetched_at"],
                "status": p["status"],
                "removed": all(bool(products[m]["removed"]) for m in members),
                "also_in": sorted({products[m]["mall"] for m in members} - {p["mall"]}),
                "listings": json.dumps(listings, ensure_ascii=False),
                "n_listings": len(members),
            }
        )
    for f in failures:
        f.setdefault("mall", None)
    kinds: dict[str, int] = {}
    for f in failures:
        kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
    stats = {
        "products": len(rows),
        "listings": len(products),
        "merged_duplicates": len(products) - len(rows),
        "removed": sum(1 for r in rows if r["removed"]),
        "pages": sum(m["pages"] for m in per_mall.values()),
        "requests": sum(m["requests"] for m in per_mall.values()),
        "bytes": sum(m["bytes"] for m in per_mall.values()),
        "images": len({r["sha256"] for r in image_rows}),
        "image_links": len(image_rows),
        "image_bytes": sum({r["sha256"]: r["bytes"] for r in image_rows}.values()),
        "near_dup_groups": len({g for s, g in groups.items() if s != g}),
        "failures": len(failures),
        "errors_by_kind": dict(sorted(kinds.items())),
        "malls": per_mall,
    }
    return {"products": rows, "images": image_rows, "failures": failures, "stats": stats}


def _write_parquet(rows: list[dict[str, Any]], path: Path, columns: list[str], time_cols: tuple[str, ...] = ()) -> None:
    import pandas as pd

    df = pd.DataFrame(rows, columns=columns)
    for c in time_cols:
        df[c] = pd.to_datetime(df[c], unit="s", utc=True)
    df.to_parquet(path, index=False)


PRODUCT_COLUMNS = [
    "product_id",
    "mall",
    "url",
    "sku",
    "title",
    "brand",
    "price",
    "currency",
    "category",
    "description",
    "attributes",
    "image_urls",
    "image_sha256",
    "fetched_at",
    "status",
    "removed",
    "also_in",
    "listings",
    "n_listings",
]
IMAGE_COLUMNS = [
    "sha256",
    "width",
    "height",
    "format",
    "phash",
    "bytes",
    "ext",
    "source_url",
    "product_id",
    "mall",
    "role",
    "position",
    "near_dup_group",
]
FAILURE_COLUMNS = ["url", "mall", "kind", "reason", "status", "time", "product_id"]


def tree_hash(root: Path) -> str:
    """sha256 over every file's relative path and sha256 (excluding snapshot.json)."""
    h = hashlib.sha256()
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and p.name != "snapshot.json":
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def write_snapshot(
    mall_dirs: list[str],
    out: Path,
    blobs: Path,
    started_at: float | None = None,
    near_dup_threshold: int = NEAR_DUP_THRESHOLD,
    requested: list[str] | None = None,
) -> dict[str, Any]:
    """Write the snapshot directory ``out`` atomically (staging dir + rename).

    ``requested`` names every mall the crawl was asked for (``malls_requested`` in
    ``snapshot.json``; default: the malls of ``mall_dirs``), so validation can tell a mall
    that yielded nothing, or whose run is missing, from one that was never asked for.
    An existing complete snapshot is never touched (immutability; a retried task gets
    the same answer).
    """
    out = Path(out)
    if (out / "snapshot.json").exists():
        return json.loads((out / "snapshot.json").read_text())
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a finished snapshot; refusing to write into it")
    t_merge = time.time()
    merged = merge_runs(mall_dirs, near_dup_threshold)
    stage = out.parent / f".{out.name}.partial"
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "images").mkdir(parents=True)
    _write_parquet(merged["products"], stage / "products.parquet", PRODUCT_COLUMNS, ("fetched_at",))
    _write_parquet(merged["images"], stage / "images.parquet", IMAGE_COLUMNS)
    _write_parquet(merged["failures"], stage / "failures.parquet", FAILURE_COLUMNS, ("time",))
    for r in {r["sha256"]: r for r in merged["images"]}.values():
        dst = blob_path(stage / "images", r["sha256"], r["ext"])
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blob_path(blobs, r["sha256"], r["ext"]), dst)
    stats = merged["stats"]
    now = time.time()
    stats["duration_s"] = round(now - (started_at or t_merge), 3)
    stats["snapshot_bytes"] = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())
    (stage / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True))
    meta = {
        "name": out.name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "malls": sorted(stats["malls"]),
        "malls_requested": sorted(set(requested or []) | set(stats["malls"])),
        "content_sha256": tree_hash(stage),
        "counts": {k: stats[k] for k in ("products", "images", "failures", "removed")},
    }
    (stage / "snapshot.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    os.replace(stage, out)
    return meta


def _inside(path: Path, root: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False


def version_snapshot(
    out: Path, dvc: bool | None = None, push: bool = True, s: Settings | None = None
) -> dict[str, Any]:
    """Add a written snapshot to DVC when it lies in the data tree; describe it.

    Returns ``{"path", "snapshot_id", "data_version", "rel_path", "meta", "stats"}``. The
    snapshot id is ``<data.dvc md5>:<path relative to data/>``: checking out that data
    version restores the snapshot byte for byte (:func:`restore_snapshot`). Outside the
    data tree (``tailor crawl --out /elsewhere``) ``snapshot_id`` is None.
    """
    from pipelines import versioning

    s = s or get_settings()
    out = Path(out).resolve()
    meta = json.loads((out / "snapshot.json").read_text())
    in_tree = _inside(out, Path(s.data_dir))
    use_dvc = in_tree if dvc is None else (dvc and in_tree)
    data_version = rel = snapshot_id = None
    if use_dvc:
        data_version = versioning.commit_data(push=push, s=s)
        rel = str(out.relative_to(Path(s.data_dir).resolve()))
        snapshot_id = f"{data_version}:{rel}"
        # A registry outside the data tree (writing inside would change the version).
        reg = s.crawl_state_dir / "snapshots.jsonl"
        reg.parent.mkdir(parents=True, exist_ok=True)
        with reg.open("a") as fh:
            fh.write(json.dumps({"snapshot_id": snapshot_id, "path": str(out), **meta}) + "\n")
    stats = json.loads((out / "stats.json").read_text())
    return {
        "path": str(out),
        "snapshot_id": snapshot_id,
        "data_version": data_version,
        "rel_path": rel,
        "meta": meta,
        "stats": stats,
    }


def latest_snapshot(s: Settings | None = None) -> Path:
    """The newest snapshot the crawler registered (``var/crawl-state/snapshots.jsonl``)."""
    s = s or get_settings()
    reg = s.crawl_state_dir / "snapshots.jsonl"
    if reg.exists():
        lines = [json.loads(x) for x in reg.read_text().splitlines() if x.strip()]
        if lines:
            return Path(lines[-1]["path"])
    snaps = sorted((s.snapshots_dir).glob("*/snapshot.json"))
    if not snaps:
        raise FileNotFoundError("no crawl snapshot registered; run `tailor crawl` or pass snapshot=")
    return snaps[-1].parent


def restore_snapshot(snapshot_id: str, s: Settings | None = None) -> Path:
    """Bring back the data tree at the version in ``snapshot_id``; return the snapshot path.

    Points ``data.dvc`` at that version and checks it out (pulling from the remote when the
    local cache lacks it), exactly what ``git checkout <commit> -- data.dvc && dvc pull``
    would do in a clone.
    """
    import yaml

    from pipelines import versioning

    s = s or get_settings()
    version, rel = snapshot_id.split(":", 1)
    dvc_file = Path(s.root) / "data.dvc"
    meta = yaml.safe_load(dvc_file.read_text())
    out = meta["outs"][0]
    if out.get("md5") != version:
        meta["outs"][0] = {
            "md5": version,
            "path": out.get("path", "data"),
            **({"hash": out["hash"]} if "hash" in out else {}),
        }
        dvc_file.write_text(yaml.safe_dump(meta, sort_keys=False))
    proc = versioning.dvc("checkout", "--force", "data.dvc", s=s, check=False)
    target = Path(s.data_dir) / rel
    if proc.returncode != 0 or not (target / "snapshot.json").exists():
        versioning.dvc("pull", "--force", "data.dvc", s=s)
    return target
