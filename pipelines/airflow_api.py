"""A small client for the Airflow 3 REST API (``/api/v2``) of the embedded default.

Used by ``tailor demo`` to trigger ``crawl_malls`` the way an ML engineer would, and to
follow the Asset-scheduled DAGs it sets off, and by tests that check a running Airflow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from pipelines.settings import Settings, get_settings

FINISHED = {"success", "failed"}


def _ts(value: str) -> datetime:
    """An ISO timestamp from the API ("...Z" or "+00:00") as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class AirflowClient:
    """Authenticated access to one Airflow api-server."""

    base_url: str
    username: str
    password: str
    timeout_s: float = 30.0
    _token: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, s: Settings | None = None) -> AirflowClient:
        """Client for the standalone Airflow that ``tailor up`` started (admin + generated password)."""
        from pipelines.services import airflow_password_file

        s = s or get_settings()
        pw_file = airflow_password_file(s)
        if not pw_file.exists():
            raise RuntimeError(f"no Airflow password file at {pw_file}; is Airflow running (`tailor up`)?")
        users = json.loads(pw_file.read_text())
        user, password = next(iter(users.items()))
        return cls(base_url=s.url(s.airflow_port), username=user, password=password)

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            r = httpx.post(
                f"{self.base_url}/auth/token",
                timeout=self.timeout_s,
                json={"username": self.username, "password": self.password},
            )
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """One API call; raises with Airflow's own error detail on failure."""
        r = httpx.request(
            method, f"{self.base_url}/api/v2{path}", headers=self._headers(), timeout=self.timeout_s, **kw
        )
        if r.status_code >= 400:
            raise RuntimeError(f"Airflow {method} {path} -> {r.status_code}: {r.text[:500]}")
        return r.json() if r.content else None

    def dag_ids(self) -> list[str]:
        """DAGs the dag-processor has parsed."""
        return [d["dag_id"] for d in self.request("GET", "/dags", params={"limit": 100})["dags"]]

    def wait_for_dags(self, dag_ids: list[str], timeout_s: float = 180) -> None:
        """Block until every DAG in ``dag_ids`` has been parsed (fresh installs take a moment)."""
        deadline = time.monotonic() + timeout_s
        while True:
            missing = set(dag_ids) - set(self.dag_ids())
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Airflow has not parsed {sorted(missing)} after {timeout_s:.0f}s")
            time.sleep(2)

    def unpause(self, dag_id: str) -> None:
        """Make sure a DAG is not paused (manual triggers and Asset schedules need that)."""
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """Trigger a run now with ``conf`` as params; returns its run id."""
        body = {"logical_date": None, "conf": conf or {}}
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def runs(self, dag_id: str, limit: int = 20) -> list[dict]:
        """Most recent runs first."""
        return self.request("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": limit})[
            "dag_runs"
        ]

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str | None = None,
        after: str | None = None,
        timeout_s: float = 900,
        on_poll: Callable[[str], None] | None = None,
    ) -> dict:
        """Wait for a run to finish: the given ``run_id``, or else the first run queued after the
        ISO timestamp ``after`` (how Asset-triggered runs are found). Returns the run record."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = None
            for r in self.runs(dag_id):
                if run_id is not None and r["dag_run_id"] == run_id:
                    run = r
                elif run_id is None and after is not None and r.get("run_after") and _ts(r["run_after"]) >= _ts(after):
                    run = r  # runs are newest first: keep the oldest one after `after`
            if run is not None and run["state"] in FINISHED:
                return run
            if on_poll:
                on_poll(run["state"] if run else "not started")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{dag_id} run {run_id or 'after ' + str(after)} not finished after {timeout_s:.0f}s"
                )
            time.sleep(5)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of one run (mapped ones once per map index)."""
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 200})[
            "task_instances"
        ]

    def return_value(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        """What one task instance returned (its ``return_value`` XCom), decoded."""
        entry = self.request(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
            params={"map_index": map_index, "deserialize": True},
        )
        value = entry.get("value") if isinstance(entry, dict) else entry
        if isinstance(value, str):
            import ast

            try:
                return json.loads(value)
            except ValueError:
                return ast.literal_eval(value)
        return value

    def failed_tasks(self, dag_id: str, run_id: str) -> list[str]:
        """Task ids (with map index) that failed in one run, for error messages."""
        return [
            f"{t['task_id']}[{t['map_index']}]" if t.get("map_index", -1) >= 0 else t["task_id"]
            for t in self.task_instances(dag_id, run_id)
            if t["state"] in ("failed", "upstream_failed")
        ]
