"""The closet store (SQLAlchemy + Alembic, content-addressed images, tokens) and the shopper
routes (closet, look, products, attribute search, map) on an untrained bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bentos.closet.store import Analysis, ClosetStore, NotFound, UnknownUser, hash_token
from tests.helpers.serving import jpeg


def _analysis(category: str = "t-shirt", color: str = "red", seed: int = 0) -> Analysis:
    v = np.random.default_rng(seed).normal(size=8).astype(np.float32)
    return Analysis(
        category,
        0.9,
        {"color": {"value": color, "score": 0.8}},
        v / np.linalg.norm(v),
        None,
        {"tagger": "1", "embedder": "2"},
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ClosetStore:
    """The same store on the embedded SQLite file and on a real Postgres server: only the
    URL differs (``closet_db_url``)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'closet.db'}"
    else:
        import sqlalchemy

        base = request.getfixturevalue("postgres_url")
        db = f"closet_{request.node.name.split('[')[0][-40:]}".lower()
        with sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db}"')
            conn.exec_driver_sql(f'CREATE DATABASE "{db}"')
        url = base.rsplit("/", 1)[0] + f"/{db}"
    s = ClosetStore(url, tmp_path / "images")
    s.migrate()
    yield s
    s.engine.dispose()


def test_migrations_create_the_models_tables(store: ClosetStore):
    from sqlalchemy import inspect

    from bentos.closet.schema import Base

    assert store.revision() == "0001"
    assert store.engine.dialect.name in ("sqlite", "postgresql")
    insp = inspect(store.engine)
    for name, table in Base.metadata.tables.items():
        assert {c["name"] for c in insp.get_columns(name)} == set(table.columns.keys())
    assert store.migrate() == "0001"  # idempotent


def test_users_store_only_a_token_hash_and_revoke(store: ClosetStore):
    token = store.add_user("ann")
    assert store.user_for_token(token).name == "ann"
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT name, token_hash FROM users").all()
    assert rows == [("ann", hash_token(token))] and token not in str(rows)
    with pytest.raises(ValueError, match="exists"):
        store.add_user("ann")
    assert store.user_for_token("not-a-token") is None and store.user_for_token(None) is None
    store.revoke("ann")
    assert store.user_for_token(token) is None
    assert store.list_users() == [
        {"name": "ann", "created_at": store.list_users()[0]["created_at"], "revoked": True, "items": 0}
    ]
    new = store.rotate_token("ann")
    assert store.user_for_token(new).name == "ann" and store.user_for_token(token) is None
    with pytest.raises(UnknownUser):
        store.revoke("bob")


def test_images_are_content_addressed_and_removed_with_the_last_item(store: ClosetStore, tmp_path: Path):
    uid = store.user_id(store.add_user("ann") and "ann")
    a = store.add_item(uid, b"same bytes", "jpg", _analysis())
    b = store.add_item(uid, b"same bytes", "jpg", _analysis())
    files = list((tmp_path / "images").rglob("*.jpg"))
    assert len(files) == 1 and files[0].read_bytes() == b"same bytes"
    store.delete_item(uid, a["id"])
    assert files[0].exists()  # still referenced by b
    store.delete_item(uid, b["id"])
    assert not files[0].exists() and store.list_items(uid) == []
    with pytest.raises(NotFound):
        store.delete_item(uid, b["id"])


def test_retag_recomputes_and_keeps_hand_corrections(store: ClosetStore):
    uid = store.user_id(store.add_user("ann") and "ann")
    item = store.add_item(uid, b"x", "jpg", _analysis("t-shirt", "red"))
    other = store.add_item(uid, b"y", "jpg", _analysis("t-shirt", "red"))
    store.update_item(uid, item["id"], category="polo", tags={"color": "navy"})
    newer = Analysis(
        "shirt",
        0.7,
        {"color": {"value": "white", "score": 0.6}, "pattern": {"value": "stripes", "score": 0.5}},
        _analysis(seed=5).embedding,
        [1.0, 2.0, 3.0, 4.0],
        {"tagger": "9", "embedder": "9"},
    )
    assert store.retag(lambda path: newer) == {"items": 2, "kept_corrections": 2}
    fixed, plain = store.get_item(uid, item["id"]), store.get_item(uid, other["id"])
    assert fixed["category"] == "polo" and fixed["tags"]["color"] == {"value": "navy", "score": 1.0, "source": "user"}
    assert fixed["tags"]["pattern"]["value"] == "stripes" and fixed["model_versions"]["tagger"] == "9"
    assert plain["category"] == "shirt" and plain["tags"]["color"]["value"] == "white"
    _, vecs = store.embeddings(uid, "shirt")
    assert np.allclose(vecs[0], newer.embedding)


# --------------------------------------------------------------------------- HTTP
@pytest.fixture(scope="module")
def api(serve_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    import torch
    from fastapi.testclient import TestClient

    from bentos._io import load_config
    from bentos.api import build_app
    from bentos.catalog import CatalogView
    from bentos.engine import Bundle, SearchEngine

    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("closet")
    store = ClosetStore(f"sqlite:///{d / 'closet.db'}", d / "images")
    store.migrate()
    bundle = Bundle.load(serve_bundle)
    engine = SearchEngine(bundle)
    catalog = CatalogView(serve_bundle / "index", bundle.versions["index"])
    app = build_app(
        lambda: engine,
        load_config(),
        catalog_images=serve_bundle / "index" / "images",
        get_store=lambda: store,
        get_catalog=lambda: catalog,
    )
    with TestClient(app) as c:
        yield c, store, catalog


def _photo(small_world: Path, pid: str) -> bytes:
    return (small_world / "images" / "shop" / f"{pid}.jpg").read_bytes()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_closet_flow_upload_list_correct_delete(api, small_world: Path):
    client, store, _ = api
    token = store.add_user("flow")
    img = _photo(small_world, "p00010")
    r = client.post("/closet/items", files={"image": ("a.jpg", img, "image/jpeg")}, headers=_auth(token))
    assert r.status_code == 201, r.text
    item = r.json()
    assert item["category_source"] == "model" and item["category"] and item["model_versions"]["tagger"] == "fresh-s0"
    r = client.post(
        "/closet/items",
        files={"image": ("b.jpg", _photo(small_world, "p00011"), "image/jpeg")},
        data={"category": "skirt"},
        headers=_auth(token),
    )
    assert r.status_code == 201 and r.json()["category"] == "skirt" and r.json()["category_source"] == "user"
    listing = client.get("/closet/items", headers=_auth(token)).json()
    assert listing["count"] == 2 and "skirt" in listing["categories"]
    only = client.get("/closet/items", params={"category": "skirt"}, headers=_auth(token)).json()
    assert list(only["categories"]) == ["skirt"] and only["count"] == 1
    got = client.get(f"/closet/items/{item['id']}/image", headers=_auth(token))
    assert got.status_code == 200 and got.content == img
    r = client.patch(
        f"/closet/items/{item['id']}", json={"category": "polo", "tags": {"color": "navy"}}, headers=_auth(token)
    )
    assert r.status_code == 200 and r.json()["category"] == "polo"
    assert r.json()["tags"]["color"] == {"value": "navy", "score": 1.0, "source": "user"}
    bad = client.patch(f"/closet/items/{item['id']}", json={"tags": {"color": "plaid"}}, headers=_auth(token))
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_color"
    assert client.delete(f"/closet/items/{item['id']}", headers=_auth(token)).status_code == 204
    assert client.get(f"/closet/items/{item['id']}", headers=_auth(token)).status_code == 404
    assert client.get("/closet/items", headers=_auth(token)).json()["count"] == 1


def test_no_route_lets_a_user_touch_another_users_closet(api, small_world: Path):
    client, store, _ = api
    owner, intruder = store.add_user("owner"), store.add_user("intruder")
    item = client.post(
        "/closet/items", files={"image": ("a.jpg", _photo(small_world, "p00012"), "image/jpeg")}, headers=_auth(owner)
    ).json()
    before = client.get("/closet/items", headers=_auth(owner)).json()
    iid = item["id"]
    attempts = [
        ("get", f"/closet/items/{iid}", {}),
        ("get", f"/closet/items/{iid}/image", {}),
        ("patch", f"/closet/items/{iid}", {"json": {"category": "skirt"}}),
        ("delete", f"/closet/items/{iid}", {}),
    ]
    for who, headers in (("intruder", _auth(intruder)), ("nobody", {}), ("forged", _auth("forged-token"))):
        for method, url, kw in attempts:
            r = getattr(client, method)(url, headers=headers, **kw)
            assert r.status_code in (401, 403, 404), (who, method, url, r.status_code)
            assert r.status_code == (404 if who == "intruder" else 401)
        listing = client.get("/closet/items", headers=headers)
        assert listing.status_code == 401 or listing.json()["count"] == 0, who
        up = client.post("/closet/items", files={"image": ("a.jpg", jpeg(), "image/jpeg")}, headers=headers)
        look = client.post("/look", files={"image": ("a.jpg", jpeg(), "image/jpeg")}, headers=headers)
        if who != "intruder":
            assert up.status_code == 401 and look.status_code == 401
            assert up.json()["error"]["code"] == "unauthorized"
    # The owner's closet is exactly as it was (the intruder's own upload went to the intruder).
    assert client.get("/closet/items", headers=_auth(owner)).json() == before
    assert store.get_item(store.user_id("owner"), iid)["category"] == item["category"]


def test_closet_upload_follows_the_search_bad_input_rules(api):
    client, store, _ = api
    token = store.add_user("badinput")
    cases = [
        ({"files": {"image": ("x.txt", b"not an image", "text/plain")}}, 400),
        ({"files": {"image": ("t.jpg", jpeg((300, 300))[:400], "image/jpeg")}}, 400),
        ({"files": {"other": ("x.jpg", jpeg(), "image/jpeg")}}, 422),
        ({"files": {"image": ("x.jpg", jpeg(), "image/jpeg")}, "data": {"category": "spacesuit"}}, 422),
        ({"content": b"\x80\x04K\x01.", "headers": {"content-type": "application/vnd.bentoml+pickle"}}, 415),
    ]
    for kw, status in cases:
        headers = {**kw.pop("headers", {}), **_auth(token)}
        r = client.post("/closet/items", headers=headers, **kw)
        assert r.status_code == status, (kw, r.text)
        assert set(r.json()["error"]) == {"code", "message", "field"}
    assert client.get("/closet/items", headers=_auth(token)).json()["count"] == 0


def test_look_covers_owned_garments_and_offers_products_for_the_rest(api, small_world: Path):
    client, store, _ = api
    token = store.add_user("looker")
    look = _photo(small_world, "p00020")
    empty = client.post("/look", files={"image": ("l.jpg", look, "image/jpeg")}, headers=_auth(token)).json()
    assert empty["garments"] and all(g["status"] == "missing" and g["closet_item"] is None for g in empty["garments"])
    assert all(g["products"] and all(p["category"] == g["category"] for p in g["products"]) for g in empty["garments"])
    # Owning the very photo covers its garment: similarity 1 >= covered_min.
    client.post("/closet/items", files={"image": ("o.jpg", look, "image/jpeg")}, headers=_auth(token))
    body = client.post("/look", files={"image": ("l.jpg", look, "image/jpeg")}, headers=_auth(token)).json()
    covered = [g for g in body["garments"] if g["status"] == "covered"]
    assert covered and covered[0]["similarity"] >= body["covered_min"] and covered[0]["products"] == []
    assert covered[0]["closet_item"]["category"] == covered[0]["category"]


def test_products_filters_by_tags_with_cursor_paging(api):
    client, _, catalog = api
    everything = client.get("/products", params={"limit": 100}).json()
    assert everything["total"] == len(catalog)
    first = catalog.frame.iloc[0]
    cat, color = first["category"], first["color"]
    params = {"category": cat, "limit": 2, **({"color": color} if color else {})}
    seen, cursor = [], None
    while True:
        page = client.get("/products", params={**params, **({"cursor": cursor} if cursor else {})}).json()
        assert len(page["products"]) <= 2
        seen += page["products"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    want = catalog.frame[(catalog.frame["category"] == cat) & ((catalog.frame["color"] == color) if color else True)]
    assert [p["product_id"] for p in seen] == list(want["product_id"]) and len(seen) == page["total"]
    assert all(p["category"] == cat and (not color or p["tags"]["color"] == color) for p in seen)
    assert client.get("/products", params={"color": "plaid"}).status_code == 422
    assert client.get("/products", params={"cursor": "garbage"}).json()["error"]["code"] == "invalid_cursor"


def test_search_attributes_ranks_by_shared_tags_then_similarity(api, small_world: Path):
    client, _, catalog = api
    r = client.post(
        "/search/attributes", files={"image": ("p.jpg", _photo(small_world, "p00010"), "image/jpeg")}, data={"k": "8"}
    )
    assert r.status_code == 200, r.text
    g = r.json()["garments"][0]
    shared = [p["shared_tags"] for p in g["products"]]
    assert shared == sorted(shared, reverse=True) and len(g["products"]) == 8
    for a, b in zip(g["products"], g["products"][1:], strict=False):
        if a["shared_tags"] == b["shared_tags"]:
            assert a["score"] >= b["score"]
    # shared_tags counts exactly the tags named in `matching`
    assert all(p["shared_tags"] == len(p["matching"]) for p in g["products"])
    assert len(g["map_xy"]) == 2
    m = client.get("/catalog/map").json()
    assert len(m["points"]) == len(catalog) and m["method"] == "pca"


def test_catalog_attributes_were_tagged_by_the_bundles_tagger(serve_bundle: Path):
    import json

    import pandas as pd

    attrs = pd.read_parquet(serve_bundle / "index" / "attributes.parquet")
    meta = json.loads((serve_bundle / "index" / "map.json").read_text())
    assert meta["tagged"] and meta["tagger_version"] == "fresh-s0" and len(meta["components"]) == 2
    from models.taxonomy import APPLICABLE

    for _, row in attrs.iterrows():  # only the heads that apply to the product's category are set
        for head in ("color", "pattern", "sleeve", "neckline", "length"):
            assert bool(pd.notna(row[head])) == (head in APPLICABLE.get(row["category"], ())), (row["category"], head)


@pytest.mark.services
def test_the_settings_url_alone_moves_the_closet_to_postgres(postgres_url: str, tmp_path: Path):
    from pipelines.settings import Settings

    store = ClosetStore.from_settings(Settings(root=tmp_path, closet_db_url=postgres_url))
    assert store.engine.dialect.name == "postgresql" and store.revision() == "0001"
    assert store.user_for_token(store.add_user(f"pg-{tmp_path.name}")) is not None
    assert not (tmp_path / "var" / "closet" / "closet.db").exists()
    store.engine.dispose()


def test_users_and_retag_commands(
    serve_bundle: Path,
    small_world: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """``tailor users add/list/revoke`` and ``tailor closet retag`` on the settings' store:
    re-tagging with a bundle's models replaces model answers and keeps hand corrections."""
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.settings import get_settings

    monkeypatch.setenv("TAILOR_CLOSET_DIR", str(tmp_path / "closet"))
    get_settings.cache_clear()
    try:
        run = CliRunner().invoke
        added = run(app, ["users", "add", "cli-user"])
        assert added.exit_code == 0, added.output
        token = added.output.strip().splitlines()[-1]
        store = ClosetStore.from_settings()
        assert store.user_for_token(token).name == "cli-user"
        assert "cli-user\tactive\t0 items" in run(app, ["users", "list"]).output
        uid = store.user_id("cli-user")
        img = (small_world / "images" / "shop" / "p00003.jpg").read_bytes()
        stale = Analysis(
            "hat",
            0.1,
            {"color": {"value": "pink", "score": 0.1}, "pattern": {"value": "dots", "score": 0.1}},
            _analysis().embedding,
            None,
            {"tagger": "old"},
        )
        item = store.add_item(uid, img, "jpg", stale)
        store.update_item(uid, item["id"], tags={"pattern": "floral"})
        res = run(app, ["closet", "retag", "--bundle", str(serve_bundle)])
        assert res.exit_code == 0, res.output
        after = store.get_item(uid, item["id"])
        assert after["model_versions"]["tagger"] == "fresh-s0"
        assert after["tags"]["pattern"] == {"value": "floral", "score": 1.0, "source": "user"}
        assert after["tags"].get("color", {}).get("source", "model") == "model"
        _, vecs = store.embeddings(uid)
        assert vecs.shape[1] != 8  # the bundle's embedder replaced the stale 8-d vector
        assert run(app, ["users", "revoke", "cli-user"]).exit_code == 0
        assert store.user_for_token(token) is None
        assert run(app, ["users", "revoke", "nobody"]).exit_code == 2
    finally:
        get_settings.cache_clear()


def test_demo_user_token_through_the_tailor_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The demo's shopper comes from ``tailor users token`` (the pipelines never import the
    closet store): created on the first call, a new token on the next, the old one dead, and
    the token file readable by its owner only."""
    from pipelines.demo import demo_user
    from pipelines.settings import get_settings

    monkeypatch.setenv("TAILOR_CLOSET_DIR", str(tmp_path / "closet"))
    get_settings.cache_clear()
    try:
        first, path = demo_user(name="shopper")
        assert path.read_text().strip() == first and (path.stat().st_mode & 0o777) == 0o600
        second, _ = demo_user(name="shopper")
        store = ClosetStore.from_settings()
        assert second != first and path.read_text().strip() == second
        assert store.user_for_token(second).name == "shopper"
        assert store.user_for_token(first) is None
    finally:
        get_settings.cache_clear()
