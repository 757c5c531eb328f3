"""The tests' own rule for a missing prerequisite: skip on a workstation, fail under CI."""

from __future__ import annotations

import pytest

from tests.helpers import missing


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_missing_prerequisite_fails_under_ci_and_skips_elsewhere(monkeypatch, ci: str, outcome) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="chromium"):
        missing("chromium missing")
