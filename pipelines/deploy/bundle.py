"""Model bundles: the exact artifacts one deployment serves.

Layout of a bundle directory::

    manifest.json          {"versions": {detector, parser, tagger, embedder, index}, "source", "created", ...}
    models/<model>/        MLflow pytorch model directory (pickle format), one per model
    index/                 the product index built with the bundled embedder

:func:`build_bundle` resolves ``models:/tailor-<model>@champion`` to exact versions at
build time and copies the artifacts, so a later promotion does not change a built bundle.
:func:`fresh_bundle` makes one from freshly initialised (seeded, untrained) models and a
small world's catalog: real components with meaningless weights, for tests and benchmarks
before champions exist. Retrieval of a catalog product's own image still works with them,
because the index holds that image's own embedding.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from pipelines.settings import Settings, get_settings

MODELS = ("detector", "parser", "tagger", "embedder")


def _write_manifest(out: Path, versions: dict[str, str], source: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    manifest = {"versions": versions, "source": source,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(extra or {})}
    manifest["id"] = hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:12]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def resolve_champions(s: Settings | None = None) -> dict[str, dict[str, str]]:
    """``{model: {"version", "uri", "run_id"}}`` of each ``@champion``; raises naming the models without one."""
    from mlflow.exceptions import MlflowException

    from pipelines import registry

    s = s or get_settings()
    client = registry._client(s)
    out, missing = {}, []
    for m in MODELS:
        name = registry.registered_name(m)
        try:
            mv = client.get_model_version_by_alias(name, registry.CHAMPION)
        except MlflowException:
            missing.append(m)
            continue
        out[m] = {"version": str(mv.version), "uri": f"models:/{name}/{mv.version}", "run_id": str(mv.run_id)}
    if missing:
        raise RuntimeError(f"no @champion for {missing}: run the retrain_models DAG (or `tailor train`) first")
    return out


def find_index(embedder_version: str, s: Settings | None = None) -> Path | None:
    """The newest index directory built for ``embedder_version`` (by its metadata), or None.

    Looks for ``pipelines.index``'s own lookup first, then scans ``var/`` and ``data/`` for
    index directories whose JSON metadata names the embedder version.
    """
    s = s or get_settings()
    try:
        from pipelines import index as idx  # type: ignore[attr-defined]

        for fn_name in ("find_index", "latest_index", "index_for"):
            fn = getattr(idx, fn_name, None)
            if fn is not None:
                found = fn(embedder_version)
                if found:
                    return Path(found)
    except ImportError:
        pass
    candidates = []
    for root in (Path(s.var_dir), Path(s.data_dir)):  # type: ignore[arg-type]
        for meta in list(root.glob("index*/**/*.json"))[:2000]:
            try:
                data = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict):
                continue
            emb = data.get("embedder")
            ev = data.get("embedder_version") or (emb.get("version") if isinstance(emb, dict) else emb)
            if ev is not None and str(ev) == str(embedder_version):
                candidates.append((meta.stat().st_mtime, meta.parent))
    return max(candidates)[1] if candidates else None


def build_bundle(out: Path, index_dir: Path | None = None, world: Path | None = None,
                 s: Settings | None = None) -> dict[str, Any]:
    """Resolve the champions, copy their MLflow models and the embedder's index into ``out``.

    ``index_dir`` overrides the lookup; without an index built for the champion embedder, a
    flat index over ``world``'s catalog (default: the demo world) is built with it.
    Returns ``{"bundle": str, "versions": {...}}``.
    """
    import mlflow

    from bentos import _adapters as A

    s = s or get_settings()
    champs = resolve_champions(s)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "models").mkdir(parents=True)
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    mlflow.set_registry_uri(s.mlflow_tracking_uri)
    for m, info in champs.items():
        local = mlflow.artifacts.download_artifacts(artifact_uri=info["uri"], dst_path=str(out / "models" / f".{m}"))
        shutil.move(local, out / "models" / m)
        shutil.rmtree(out / "models" / f".{m}", ignore_errors=True)
    versions = {m: info["version"] for m, info in champs.items()}
    src = Path(index_dir) if index_dir else find_index(versions["embedder"], s)
    if src is not None:
        shutil.copytree(src, out / "index")
        meta = next((json.loads(p.read_text()) for p in sorted(src.glob("*.json"))), {})
        versions["index"] = str(meta.get("version") or meta.get("id") or src.name) if isinstance(meta, dict) else src.name
    else:
        world = Path(world or s.demo_world_dir)
        embedder = A.load_model(out / "models" / "embedder")
        products, images = A.world_catalog(world, base_url=s.url(s.mall_base_port))
        versions["index"] = f"flat-e{versions['embedder']}-{world.name}"
        A.build_flat_index(embedder, products, images, out / "index", versions["index"])
    manifest = _write_manifest(out, versions, "registry", {"champions": champs})
    return {"bundle": str(out), "versions": versions, "id": manifest["id"]}


def fresh_bundle(out: Path, world: Path, seed: int = 0, profile: str = "demo",
                 base_url: str = "http://127.0.0.1:8001", max_products: int | None = None,
                 embed_images: bool = True) -> dict[str, Any]:
    """A bundle of freshly initialised, seeded models + a flat index over ``world``'s catalog.

    ``embed_images`` copies the shop images into ``index/images`` and points ``image_url``
    at the service's ``/catalog/images`` (the demo page then shows them without a mall).
    """
    import torch

    from bentos import _adapters as A

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "models").mkdir(parents=True)
    loaded = {}
    for i, m in enumerate(MODELS):
        torch.manual_seed(seed + i)
        model = A.build_model(m, A.resolve_config(m, profile)).eval()
        A.save_model(model, out / "models" / m)
        loaded[m] = model
    products, images = A.world_catalog(Path(world), base_url=base_url)
    if max_products:
        products = products[:max_products]
    if embed_images:
        (out / "index" / "images").mkdir(parents=True)
        for p in products:
            src = images[p["product_id"]]
            if src.is_file():
                shutil.copy2(src, out / "index" / "images" / src.name)
                p["image_url"] = f"/catalog/images/{src.name}"
    versions = {m: f"fresh-s{seed}" for m in MODELS}
    versions["index"] = f"flat-fresh-s{seed}-{Path(world).name}"
    A.build_flat_index(loaded["embedder"], products, images, out / "index", versions["index"])
    manifest = _write_manifest(out, versions, "fresh", {"world": str(world), "seed": seed})
    return {"bundle": str(out), "versions": versions, "id": manifest["id"]}
