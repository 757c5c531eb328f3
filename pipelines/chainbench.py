"""The whole chain on a small world, in a throwaway copy of this project, on either profile:
what the cluster suite (tests/cluster) runs and ``tailor bench chain`` times.

A run is ``tailor demo --products N --scenes M`` with every model trained ``epochs`` epochs,
in a copy of the project's tracked files (what a fresh clone has) whose gate promotes any
model: these runs measure the platform carrying the chain to a deploy, not the models (the
shipped gate is tested with its own thresholds in tests/test_retrain_dag.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from pipelines.services import free_port
from pipelines.settings import PROJECT_ROOT, Settings

#: Ports a project copy needs (TAILOR_<NAME>_PORT), with how many consecutive ones each
#: takes (the demo malls: the crawl follows them, pipelines.crawl.config.load_config; the
#: Celery workers' log servers); each copy gets free ones.
PORTS = {
    "POSTGRES": 1,
    "REDIS": 1,
    "S3": 1,
    "MLFLOW": 1,
    "AIRFLOW": 1,
    "BENTO": 1,
    "BENTO_STAGING": 1,
    "BENTO_ALT": 1,
    "REPORT": 1,
    "WORKER_LOG": 2,
    "MALL_BASE": 4,
}


def copy_project(dest: Path) -> Path:
    """Copy the project's tracked files (``git ls-files``) to ``dest``, with a gate that
    promotes any model (thresholds 0, baseline margin -1); returns ``dest``."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = PROJECT_ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    gate = dest / "config" / "gate.yaml"
    cfg = yaml.safe_load(gate.read_text())
    cfg["baseline_margin"], cfg["baseline_margins"] = -1.0, {}
    cfg["profiles"]["demo"]["thresholds"] = {
        "detector": {"map_50": 0.0},
        "parser": {"miou": 0.0},
        "tagger": {"acc_min": 0.0},
        "embedder": {"recall_at_5": 0.0},
    }
    gate.write_text(yaml.safe_dump(cfg))
    return dest


def project_env(root: Path, profile: str, epochs: int = 1) -> tuple[dict[str, str], dict[str, str]]:
    """``(process env, the TAILOR_* part of it)`` for a copy at ``root`` on ``profile``: its
    own free ports, the copy first on PYTHONPATH, synthetic malls only (no photo mall: the
    real photos would make it tens of minutes), every model ``epochs`` epochs."""
    tailor = {
        "TAILOR_ROOT": str(root),
        "TAILOR_PROFILE": profile,
        "TAILOR_TRAIN_EPOCHS": str(epochs),
        "TAILOR_PHOTOS_DIR": str(root / "no-photos"),
        **{f"TAILOR_{name}_PORT": str(free_port(run)) for name, run in PORTS.items()},
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAILOR_", "AIRFLOW", "MLFLOW_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(tailor, PYTHONPATH=str(root))
    return env, tailor


def tailor_bin() -> str:
    """The ``tailor`` console script of this environment."""
    return str(Path(sys.executable).parent / "tailor")


def demo_argv(products: int, scenes: int) -> list[str]:
    """The chain: ``tailor demo`` on a world of ``products`` products and ``scenes`` scenes."""
    return [tailor_bin(), "demo", "--products", str(products), "--scenes", str(scenes)]


def settings_for(tailor_env: dict[str, str]) -> Settings:
    """The settings a process with ``tailor_env`` (``TAILOR_*`` variables) sees."""
    return Settings(**{k.removeprefix("TAILOR_").lower(): v for k, v in tailor_env.items()})


def down(root: Path, env: dict[str, str]) -> None:
    """Stop everything the copy started and remove its Postgres data (outside the copy as root)."""
    subprocess.run([tailor_bin(), "down"], cwd=root, env=env, capture_output=True, timeout=300)
    s = settings_for({k: v for k, v in env.items() if k.startswith("TAILOR_")})
    if s.is_cluster:
        shutil.rmtree(s.postgres_dir, ignore_errors=True)


def bench_chain(out: Path, products: int = 120, scenes: int = 60, epochs: int = 1) -> dict[str, Any]:
    """Run the chain on the embedded default, then on the cluster profile, on the same small
    world (same seed), one after the other; returns each run's wall time and its DAGs' times
    as ``tailor demo`` printed them."""
    import re

    results: dict[str, Any] = {}
    for profile in ("embedded", "cluster"):
        root = copy_project(out / profile)
        env, _ = project_env(root, profile, epochs)
        log = out / f"{profile}.log"
        t0 = time.monotonic()
        try:
            with log.open("w") as fh:
                rc = subprocess.run(
                    demo_argv(products, scenes), cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=3600
                ).returncode
        finally:
            took = time.monotonic() - t0
            down(root, env)
        text = log.read_text(errors="replace")
        dags = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s+(\w+): success in (\d+)s", text, re.M)}
        results[profile] = {"rc": rc, "seconds": round(took, 1), "dags": dags, "log": str(log)}
    return results
