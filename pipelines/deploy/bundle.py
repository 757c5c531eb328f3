"""Model bundles: the exact artifacts one deployment serves.

Layout of a bundle directory::

    manifest.json          {"versions": {detector, parser, tagger, embedder, index}, "source", "created", ...}
    models/<model>/        model.pt: weights + config, loaded weights-only (models.checkpoint);
                           its sha256 is in the manifest ("weights")
    index/                 the product index built with the bundled embedder

:func:`build_bundle` resolves ``models:/tailor-<model>@champion`` to exact versions at
build time and copies the artifacts, so a later promotion does not change a built bundle.
:func:`fresh_bundle` makes one from freshly initialised (seeded, untrained) models and a
small world's catalog: real components with meaningless weights, for tests and benchmarks
before champions exist. Retrieval of a catalog product's own image still works with them:
an untrained detector finds no garment, so the service embeds the whole photo, drawn as
the index drew it (the crop policy, :mod:`pipelines.garments`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from models import MODEL_NAMES as MODELS
from pipelines.settings import Settings, get_settings


def _write_manifest(
    out: Path, versions: dict[str, str], source: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    manifest = {
        "versions": versions,
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
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


def champion_index(champs: dict[str, dict[str, str]], s: Settings | None = None) -> Path:
    """The ``tailor-index@champion`` directory, checked against the champion models.

    The index must have been built with the champion embedder on the champion detector's
    crops (its ``embedder_version``, see :func:`pipelines.index.embed.crop_version`): vectors
    from any other pair would not match the queries the bundle embeds. Raises naming the
    mismatch (run ``rebuild_index``) or the missing index.
    """
    from pipelines import registry
    from pipelines.index.embed import crop_version
    from pipelines.index.store import current_champion_dir

    d = current_champion_dir(s)
    if d is None:
        raise RuntimeError("no tailor-index@champion: run the rebuild_index DAG (or `tailor index build`) first")
    built_for = str(json.loads((d / "meta.json").read_text()).get("embedder_version"))
    # Catalog shots embedded whole (the default) depend on the embedder only; cropped by a
    # detector (``embed.crop_with``), on that detector too.
    want = crop_version(
        f"{registry.registered_name('embedder')}/v{champs['embedder']['version']}",
        f"{registry.registered_name('detector')}/v{champs['detector']['version']}" if catalog_crop_uri() else None,
    )
    if built_for != want:
        raise RuntimeError(
            f"the champion index {d.name} was built for {built_for}, but the champions are {want}: "
            "run the rebuild_index DAG so the index matches the models it will be served with"
        )
    # Catalog tags (attribute search) come from the tagger the index was built with.
    tagged_by = (json.loads((d / "meta.json").read_text()).get("attributes") or {}).get("tagger_version")
    tagger = f"{registry.registered_name('tagger')}/v{champs['tagger']['version']}"
    if tagged_by != tagger:
        raise RuntimeError(
            f"the champion index {d.name} holds catalog tags of {tagged_by}, but the champion tagger "
            f"is {tagger}: run the rebuild_index DAG so attribute search uses the served tagger"
        )
    return d


def catalog_crop_uri() -> str | None:
    """:func:`pipelines.index.stages.catalog_crop_uri` of the index config in force."""
    from pipelines.index.stages import catalog_crop_uri as uri

    return uri()


def flat_index_attributes(index_dir: Path, image_of: dict[str, Path], tagger: Any, tagger_version: str) -> None:
    """Catalog tags and map (:func:`pipelines.index.attributes.write_attributes`) for a flat
    index directory, from the vectors and product rows it holds."""
    import numpy as np
    import pandas as pd

    from pipelines.index.attributes import write_attributes

    index_dir = Path(index_dir)
    lines = (index_dir / "products.jsonl").read_text().splitlines()
    cards = pd.DataFrame([json.loads(line) for line in lines if line.strip()])
    write_attributes(
        index_dir,
        cards,
        [str(image_of[p]) for p in cards["product_id"]],
        np.load(index_dir / "vectors.npy"),
        tagger,
        tagger_version,
        progress=False,
        use_cache=False,
    )


def build_bundle(
    out: Path, index_dir: Path | None = None, world: Path | None = None, s: Settings | None = None
) -> dict[str, Any]:
    """Resolve the champions, copy their MLflow models and the index built for them into ``out``.

    The index is ``tailor-index@champion`` (checked by :func:`champion_index`), or
    ``index_dir`` when given. ``world`` instead builds a flat index over that synthetic
    world's shop images with the champion models (a dev bundle before any index exists).
    Returns ``{"bundle": str, "versions": {...}}``.
    """
    from models.checkpoint import load_dir
    from pipelines import registry
    from pipelines.index.flat import build_flat_index, world_catalog

    s = s or get_settings()
    champs = resolve_champions(s)
    src = Path(index_dir) if index_dir else (None if world else champion_index(champs, s))
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "models").mkdir(parents=True)
    weights = {}
    for m, info in champs.items():
        # the weights-only file, checked against the hash recorded at registration
        _, weights[m], _ = registry.fetch_weights(info["uri"], out / "models" / m, s)
    versions = {m: info["version"] for m, info in champs.items()}
    if src is not None:
        shutil.copytree(src, out / "index")
        meta = json.loads((src / "meta.json").read_text()) if (src / "meta.json").exists() else {}
        versions["index"] = str(meta.get("version") or src.name)
    else:
        world = Path(world)  # type: ignore[arg-type]
        products, images = world_catalog(world, base_url=s.url(s.mall_base_port))
        versions["index"] = f"flat-e{versions['embedder']}-d{versions['detector']}-{world.name}"
        build_flat_index(
            load_dir(out / "models" / "embedder", weights["embedder"]),
            products,
            images,
            out / "index",
            versions["index"],
            detector=load_dir(out / "models" / "detector", weights["detector"]) if catalog_crop_uri() else None,
        )
        flat_index_attributes(
            out / "index", images, load_dir(out / "models" / "tagger", weights["tagger"]), str(versions["tagger"])
        )
    manifest = _write_manifest(out, versions, "registry", {"champions": champs, "weights": weights})
    return {"bundle": str(out), "versions": versions, "id": manifest["id"]}


def fresh_bundle(
    out: Path,
    world: Path,
    seed: int = 0,
    profile: str = "demo",
    base_url: str = "http://127.0.0.1:8001",
    max_products: int | None = None,
    embed_images: bool = True,
) -> dict[str, Any]:
    """A bundle of freshly initialised, seeded models + a flat index over ``world``'s catalog.

    ``embed_images`` copies the shop images into ``index/images`` and points ``image_url``
    at the service's ``/catalog/images`` (the demo page then shows them without a mall).
    """
    import torch

    from models.checkpoint import save_dir
    from pipelines.index.flat import build_flat_index, world_catalog
    from pipelines.train import build_model, model_config

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "models").mkdir(parents=True)
    loaded, weights = {}, {}
    for i, m in enumerate(MODELS):
        torch.manual_seed(seed + i)
        model = build_model(m, model_config(m, profile)).eval()
        weights[m] = save_dir(model, out / "models" / m)
        loaded[m] = model
    products, images = world_catalog(Path(world), base_url=base_url)
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
    build_flat_index(
        loaded["embedder"],
        products,
        images,
        out / "index",
        versions["index"],
        detector=loaded["detector"] if catalog_crop_uri() else None,
    )
    flat_index_attributes(out / "index", images, loaded["tagger"], versions["tagger"])
    manifest = _write_manifest(out, versions, "fresh", {"world": str(world), "seed": seed, "weights": weights})
    return {"bundle": str(out), "versions": versions, "id": manifest["id"]}
