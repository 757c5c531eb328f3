"""The demo malls of a synthetic world: its products split over three shops, one per markup
(JSON-LD, microdata + OpenGraph, CSS selectors only), a share listed twice, faults planned
per mall. The malls themselves are :class:`~pipelines.malls.site.Mall` (catalogue and
request routing); this module only builds them from a world directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.malls.faults import FaultConfig, stable_hash
from pipelines.malls.site import ImageRef, Listing, Mall, rank_pick

#: The three demo malls built from one world: name -> markup.
DEMO_MALLS: dict[str, str] = {"demo-jsonld": "jsonld", "demo-microdata": "microdata", "demo-css": "css"}


def load_world(world: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read ``world.json`` and ``products.jsonl`` of a synthetic world directory."""
    world = Path(world)
    meta = json.loads((world / "world.json").read_text())
    with (world / "products.jsonl").open() as fh:
        products = [json.loads(line) for line in fh if line.strip()]
    return meta, products


def _attr_text(value: Any) -> str:
    """Attribute value as shop text (lists, e.g. several colours, become "a, b")."""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _image_name(file: str) -> str:
    """``images/shop/p00042.jpg`` -> ``shop-p00042.jpg`` (unique per world, flat URL space)."""
    p = Path(file)
    return f"{p.parent.name}-{p.name}" if p.parent.name else p.name


def _listing(world: Path, prod: dict[str, Any], primary: bool) -> Listing:
    listed = prod.get("listed") or {}
    attrs = listed.get("attributes", prod.get("attributes", {})) or {}
    images = [
        ImageRef(_image_name(i["file"]), world / i["file"], i.get("role", "shop")) for i in prod.get("images", [])
    ]
    title = prod["title"] if primary else f"{prod['title']} | {prod['brand']}"
    return Listing(
        pid=prod["product_id"],
        category=listed.get("category", prod["category"]),
        title=title,
        brand=prod["brand"],
        price=float(prod["price"]),
        currency=prod.get("currency", "EUR"),
        description=prod.get("description", ""),
        attributes={str(k): _attr_text(v) for k, v in attrs.items() if v is not None},
        images=images,
        primary=primary,
    )


def _fault_configs(faults: bool | dict[str, Any] | FaultConfig, names: list[str]) -> dict[str, FaultConfig | None]:
    if faults is True:
        return {n: FaultConfig.all_on() for n in names}
    if not faults:
        return dict.fromkeys(names)
    if isinstance(faults, FaultConfig):
        return dict.fromkeys(names, faults)
    if set(faults) <= set(names):  # per-mall mapping
        return {
            n: (
                v
                if isinstance(v, FaultConfig) or v is None
                else FaultConfig.all_on()
                if v is True
                else FaultConfig(**v)
                if v
                else None
            )
            for n, v in ((n, faults.get(n)) for n in names)
        }
    cfg = FaultConfig(**faults)  # one set of FaultConfig fields for every mall
    return dict.fromkeys(names, cfg)


def build_demo_malls(
    world: Path,
    seed: int = 0,
    faults: bool | dict[str, Any] | FaultConfig = False,
    duplicate_share: float = 0.05,
    **mall_kwargs: Any,
) -> list[Mall]:
    """The three demo malls (JSON-LD, microdata+OpenGraph, CSS) built from one world.

    Products are split by a hash of product id and ``seed``; ``duplicate_share`` of them is
    also listed in the next mall (recorded in ``Mall.shared_with``). ``faults`` is False,
    True (all on), a :class:`FaultConfig`, a dict of FaultConfig fields, or a dict
    ``{mall name: FaultConfig | dict | bool}``. ``mall_kwargs`` go to every :class:`Mall`.
    """
    world = Path(world)
    _, products = load_world(world)
    names = list(DEMO_MALLS)
    pids = [p["product_id"] for p in products]
    dups = rank_pick(pids, duplicate_share, seed, "duplicate")
    per_mall: dict[str, list[Listing]] = {n: [] for n in names}
    shared: dict[str, list[str]] = {}
    for prod in products:
        pid = prod["product_id"]
        i = int(stable_hash(seed, "mall", pid) * len(names))
        per_mall[names[i]].append(_listing(world, prod, primary=True))
        if pid in dups:
            other = names[(i + 1) % len(names)]
            per_mall[other].append(_listing(world, prod, primary=False))
            shared[pid] = [names[i], other]
    cfgs = _fault_configs(faults, names)
    malls = [Mall(n, DEMO_MALLS[n], per_mall[n], seed=seed, faults=cfgs[n], **mall_kwargs) for n in names]
    for m in malls:
        m.shared_with = {pid: [x for x in ms if x != m.name] for pid, ms in shared.items() if pid in m.listings}
    return malls


def duplicate_products(malls: list[Mall]) -> dict[str, list[str]]:
    """Product ids listed by more than one of ``malls`` -> the mall names listing them."""
    where: dict[str, list[str]] = {}
    for m in malls:
        for pid in m.listings:
            where.setdefault(pid, []).append(m.name)
    return {p: ms for p, ms in sorted(where.items()) if len(ms) > 1}
