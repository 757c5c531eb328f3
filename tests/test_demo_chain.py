"""The demo's chain follower stops with the gate's reasons when the retrain cannot lead to a
deploy (nothing promoted, or models still without a champion) instead of waiting an hour."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines import demo
from pipelines.settings import get_settings


class FakeAirflow:
    """Task instances and gate return values of one retrain run, as Airflow's API gives them."""

    def __init__(self, publish: str, decisions: list[dict[str, Any]]) -> None:
        self.publish, self.decisions = publish, decisions

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        gates = [{"task_id": "gate", "map_index": i, "state": "success"} for i in range(len(self.decisions))]
        return [*gates, {"task_id": "publish", "map_index": -1, "state": self.publish}]

    def return_value(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        return self.decisions[map_index]


DECISIONS = [
    {"model": "tagger", "version": "1", "decision": "rejected", "reasons": ["acc_min=0.43 < threshold 0.60"]},
    {"model": "embedder", "version": "1", "decision": "promoted", "reasons": ["recall_at_5=0.98 >= threshold 0.50"]},
]


def test_nothing_promoted_stops_with_reasons() -> None:
    said: list[str] = []
    with pytest.raises(RuntimeError, match="promoted no model"):
        demo._stop_unless_deployable(FakeAirflow("skipped", DECISIONS), "r1", get_settings(), said.append)
    assert "acc_min=0.43 < threshold 0.60" in "\n".join(said)


def test_missing_champions_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelines.deploy.bundle as bundle

    def missing(s: Any = None) -> dict:
        raise RuntimeError("no @champion for ['tagger']")

    monkeypatch.setattr(bundle, "resolve_champions", missing)
    said: list[str] = []
    with pytest.raises(RuntimeError, match=r"no @champion for \['tagger'\].*cannot deploy"):
        demo._stop_unless_deployable(FakeAirflow("success", DECISIONS), "r1", get_settings(), said.append)
    assert "tagger v1: REJECTED" in "\n".join(said)


def test_every_champion_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelines.deploy.bundle as bundle

    monkeypatch.setattr(bundle, "resolve_champions", lambda s=None: {})
    demo._stop_unless_deployable(FakeAirflow("success", DECISIONS), "r1", get_settings(), lambda line: None)
