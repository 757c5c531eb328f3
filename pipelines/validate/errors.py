"""Exceptions of the validate stage (import-light: the DAG and CLI catch them)."""

from __future__ import annotations


class CriticalExpectationFailed(RuntimeError):
    """At least one critical expectation failed: downstream stages must not run.

    ``failed`` lists ``"<suite>.<name>"`` ids; ``report`` is the Data Docs page to open.
    """

    def __init__(self, snapshot: str, failed: list[dict], report: str) -> None:
        self.snapshot = snapshot
        self.failed = failed
        self.report = report
        lines = [f"{len(failed)} critical expectation(s) failed on snapshot {snapshot}:"]
        for f in failed:
            lines.append(
                f"  - {f['id']} ({f['type']}{'(' + f['column'] + ')' if f.get('column') else ''}): {f['observed']}"
            )
        lines.append(f"report: {report}")
        super().__init__("\n".join(lines))
