"""``make demo``: the embedded default end to end, the way the platform's users drive it.

1. generate the synthetic world and serve it as the demo malls (with the real-photo mall of
   ``../shared/datasets/clothing-photos`` when that folder exists);
2. start MLflow and Airflow (and the data-quality report server);
3. import the world's annotation export (boxes, masks, parsing labels) into ``data/``;
4. trigger ``crawl_malls`` through Airflow's REST API and follow the Asset-scheduled runs it
   sets off: ``validate_catalog`` → ``retrain_models`` (demo profile) → ``rebuild_index`` →
   ``deploy_bento``;
5. search a street scene on the deployed endpoint, get the closet user ``demo``'s token
   (:func:`demo_user`, through ``tailor users token``), put one shop photo into its closet and complete the look of a street
   scene against it (:func:`closet_look`), then print the URLs and the token.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipelines.settings import Settings, get_settings

CHAIN = ("crawl_malls", "validate_catalog", "retrain_models", "rebuild_index", "deploy_bento")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def run_chain(s: Settings | None = None, say: Callable[[str], None] = print, timeout_s: float = 3600) -> dict[str, Any]:
    """Trigger the crawl and wait for every DAG of the chain; returns each run's record.

    Raises RuntimeError naming the DAG and the failed tasks when a run fails.
    """
    from pipelines.airflow_api import AirflowClient

    s = s or get_settings()
    client = AirflowClient.from_settings(s)
    client.wait_for_dags(list(CHAIN))
    for dag_id in CHAIN:
        client.unpause(dag_id)
    started = _now_iso()
    # The demo malls are our own loopback servers: politeness off keeps the demo short.
    run_id = client.trigger("crawl_malls", {"polite": False})
    say(f"      triggered crawl_malls ({run_id})")
    runs: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    after = started
    for dag_id in CHAIN:
        t0 = time.monotonic()
        last = {"state": ""}

        def poll(state: str, dag_id: str = dag_id, last: dict = last) -> None:
            if state != last["state"]:
                say(f"      {dag_id}: {state}")
                last["state"] = state

        run = client.wait_for_run(
            dag_id,
            run_id=run_id if dag_id == "crawl_malls" else None,
            after=None if dag_id == "crawl_malls" else after,
            timeout_s=max(60.0, deadline - time.monotonic()),
            on_poll=poll,
        )
        runs[dag_id] = run
        # The next DAG runs on the Asset event this run's last task emitted, shortly before
        # the run ended; earlier runs of it (e.g. rebuild_index on `catalog`) are not ours.
        end = datetime.fromisoformat(run["end_date"].replace("Z", "+00:00"))
        after = (end - timedelta(seconds=30)).isoformat()
        say(f"      {dag_id}: {run['state']} in {time.monotonic() - t0:.0f}s")
        if run["state"] != "success":
            failed = client.failed_tasks(dag_id, run["dag_run_id"])
            raise RuntimeError(
                f"{dag_id} run {run['dag_run_id']} {run['state']}: failed tasks {failed}; "
                f"see the Airflow UI {s.url(s.airflow_port)}"
            )
        if dag_id == "retrain_models":
            _stop_unless_deployable(client, run["dag_run_id"], s, say)
    return runs


def _stop_unless_deployable(client: Any, run_id: str, s: Settings, say: Callable[[str], None]) -> None:
    """After a retrain run, go on only if the chain can deploy: the gate promoted something
    and every model has a champion. Otherwise say the gate's reasons and stop, instead of
    waiting for an index rebuild or a deploy that cannot come."""
    from pipelines.deploy.bundle import resolve_champions
    from pipelines.train.stages import summarize

    tis = client.task_instances("retrain_models", run_id)
    decisions = []
    for t in tis:
        if t["task_id"] == "gate" and t["state"] == "success":
            try:
                decisions.append(client.return_value("retrain_models", run_id, "gate", t.get("map_index", -1)))
            except (RuntimeError, ValueError, SyntaxError):
                continue
    if decisions:
        say(summarize(sorted(decisions, key=lambda d: d["model"])))
    if not any(t["task_id"] == "publish" and t["state"] == "success" for t in tis):
        raise RuntimeError(
            "the promotion gate promoted no model, so there is nothing new to index or deploy "
            "(reasons above; the runs, metrics and baselines are in MLflow)"
        )
    try:
        resolve_champions(s)
    except RuntimeError as exc:
        raise RuntimeError(
            f"{exc}; the gate has not promoted every model yet, so the chain cannot deploy "
            "(reasons above; the runs, metrics and baselines are in MLflow)"
        ) from None


def street_search(world: Path, s: Settings | None = None, k: int = 5) -> dict[str, Any]:
    """POST one street scene of ``world`` to the deployed endpoint; returns the JSON answer."""
    import httpx

    s = s or get_settings()
    scene = sorted((world / "images" / "street").glob("*.jpg"))[0]
    with scene.open("rb") as fh:
        r = httpx.post(
            s.url(s.bento_port, "/search"),
            files={"image": (scene.name, fh, "image/jpeg")},
            data={"k": str(k)},
            timeout=120,
        )
    r.raise_for_status()
    return {"scene": str(scene), **r.json()}


def format_result(res: dict[str, Any], limit: int = 3) -> str:
    """A few readable lines: each garment with its tags and best matches."""
    lines = [
        f"search {Path(res['scene']).name}: {len(res['garments'])} garment(s); versions "
        + json.dumps(res.get("versions", {}), sort_keys=True)
    ]
    for g in res["garments"][:limit]:
        tags = ", ".join(f"{k}={v['value']}" for k, v in sorted(g.get("tags", {}).items()))
        lines.append(f"  {g['category']} {g['score']:.2f} box={[round(v) for v in g['box']]} {tags}")
        for m in g["matches"][:3]:
            lines.append(
                f"    -> {m['product_id']} {m['title']!r} ({m['mall']}, {m['price']} {m['currency']}) "
                f"score {m['score']:.3f}"
            )
    return "\n".join(lines)


def demo_user(s: Settings | None = None, name: str = "demo") -> tuple[str, Path]:
    """The demo shopper's token, through ``tailor users token`` (serving's own CLI, so the
    pipelines never import serving code): the user is created on the first run and gets a
    fresh token on later ones. It is also written to ``<closet_dir>/<name>-token.txt``
    (owner-only) for the demo page's token field."""
    import subprocess
    import sys

    s = s or get_settings()
    out = Path(s.closet_dir) / f"{name}-token.txt"
    tailor = Path(sys.executable).parent / "tailor"
    proc = subprocess.run(
        [str(tailor), "users", "token", name, "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise RuntimeError(f"tailor users token {name} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip().splitlines()[-1], out


def closet_look(world: Path, token: str, s: Settings | None = None) -> str:
    """Exercise the deployed shopper routes once: put one shop photo of ``world`` into the
    demo closet (if empty), then complete the look of a street scene. Returns a summary line."""
    import httpx

    s = s or get_settings()
    auth = {"Authorization": f"Bearer {token}"}
    base = s.url(s.bento_port)
    items = httpx.get(f"{base}/closet/items", headers=auth, timeout=60)
    items.raise_for_status()
    added = ""
    if items.json()["count"] == 0:
        shot = sorted((world / "images" / "shop").glob("*.jpg"))[0]
        r = httpx.post(
            f"{base}/closet/items",
            headers=auth,
            files={"image": (shot.name, shot.read_bytes(), "image/jpeg")},
            timeout=120,
        )
        r.raise_for_status()
        added = f"closet: added {shot.name} as {r.json()['category']}; "
    scene = sorted((world / "images" / "street").glob("*.jpg"))[0]
    r = httpx.post(
        f"{base}/look", headers=auth, files={"image": (scene.name, scene.read_bytes(), "image/jpeg")}, timeout=120
    )
    r.raise_for_status()
    gs = r.json()["garments"]
    return added + f"look {scene.name}: " + ", ".join(f"{g['category']} {g['status']}" for g in gs)
