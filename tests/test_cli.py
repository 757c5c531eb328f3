"""The `tailor` console script: help everywhere, commands wired to the pipelines functions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.settings import PROJECT_ROOT

runner = CliRunner()


def _all_command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd, prefix: list[str]) -> None:
        paths.append(prefix)
        if hasattr(cmd, "commands"):  # typer groups
            for name, sub in cmd.commands.items():
                walk(sub, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", _all_command_paths(), ids=lambda p: " ".join(p) or "tailor")
def test_help_on_every_command(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_expected_commands_exist() -> None:
    paths = {" ".join(p) for p in _all_command_paths()}
    assert {"synth", "synth preview", "mall serve", "up", "down", "status", "demo", "bench synth"} <= paths


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "tailor"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "synth" in proc.stdout


def test_settings_prints_resolved_json() -> None:
    result = runner.invoke(app, ["settings"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["host"] == "127.0.0.1" and data["root"] == str(PROJECT_ROOT)


def test_synth_and_preview_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "w"
    result = runner.invoke(app, ["synth", "--out", str(out), "--seed", "3", "--products", "24", "--scenes", "4"])
    assert result.exit_code == 0, result.output
    counts = json.loads((out / "world.json").read_text())["counts"]
    assert counts["products"] == 24 and counts["street"] == 4
    png = tmp_path / "sheet.png"
    result = runner.invoke(app, ["synth", "preview", "--world", str(out), "--out", str(png), "--n", "4"])
    assert result.exit_code == 0, result.output
    assert png.stat().st_size > 10_000


def test_synth_refuses_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), "--products", "12", "--scenes", "1"])
    assert result.exit_code == 2
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("args", [["synth", "preview", "--world"], ["mall", "serve", "--world"]])
def test_commands_name_a_missing_world(tmp_path: Path, args: list[str]) -> None:
    result = runner.invoke(app, [*args, str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "not a generated world" in result.output


def test_up_rejects_unknown_service() -> None:
    result = runner.invoke(app, ["up", "-s", "kafka"])
    assert result.exit_code == 2 and "unknown service" in result.output


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The CLI's process-wide settings pointed at an empty project under ``tmp_path``."""
    from pipelines.settings import Settings, get_settings

    monkeypatch.setenv("TAILOR_ROOT", str(tmp_path))
    get_settings.cache_clear()
    s = get_settings()
    Path(s.mlflow_dir).mkdir(parents=True)
    yield s
    get_settings.cache_clear()
    assert isinstance(s, Settings)


def test_models_status_and_rollback_on_a_real_registry(project, tiny_training_set: Path) -> None:
    """Two promotions of the tagger, then `models status` shows the second and `models
    rollback` moves @champion back to the first; a model with no champion says so."""
    import torch

    from pipelines import gate, registry
    from tests.helpers.registry import FakeTrainResult, gate_metrics

    cfg = gate.GateConfig(thresholds={"tagger": {"acc_min": 0.5}}, tolerance=0.02)
    versions = []
    for acc in (0.6, 0.7):
        torch.manual_seed(0)
        res = FakeTrainResult(model=torch.nn.Linear(4, 2), metrics=gate_metrics(acc))
        v = registry.log_training_run("tagger", res, tiny_training_set, "snap-1", s=project)["version"]
        assert registry.gate("tagger", v, gate_metrics(acc), "ts-1", cfg, s=project).promoted
        versions.append(v)

    status = runner.invoke(app, ["models", "status", "--json"])
    assert status.exit_code == 0, status.output
    rows = {r["model"]: r for r in json.loads(status.output)}
    assert rows["tagger"]["version"] == versions[1] and rows["embedder"]["version"] is None
    text = runner.invoke(app, ["models", "status"])
    assert f"tailor-tagger    v{versions[1]}" in text.output and "tailor-embedder  no champion" in text.output

    back = runner.invoke(app, ["models", "rollback", "tagger"])
    assert back.exit_code == 0 and f"tailor-tagger@champion -> v{versions[0]}" in back.output, back.output
    again = runner.invoke(app, ["models", "rollback", "tagger"])
    assert again.exit_code == 2 and "error:" in again.output  # nothing before the first champion
    assert {r["model"]: r for r in registry.status(s=project)}["tagger"]["version"] == versions[0]
    unknown = runner.invoke(app, ["models", "rollback", "sweater"])
    assert unknown.exit_code == 2 and "unknown model 'sweater'" in unknown.output


def test_deploy_status_and_rollback_with_nothing_deployed(project) -> None:
    status = runner.invoke(app, ["deploy", "status"])
    assert status.exit_code == 0, status.output
    st = json.loads(status.output)
    assert st["current"] is None and st["history"] == []
    back = runner.invoke(app, ["deploy", "rollback"])
    assert back.exit_code == 1 and "nothing to roll back to" in back.output


def test_models_curves_draws_an_unfinished_run(tmp_path: Path) -> None:
    """A run cut short (checkpoint after epoch 2 of 40): its curves and one line per epoch."""
    import torch

    history = [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "seconds": 60.0,
            "val_map_50": 0.2 * e,
            "val_baseline_map_50": 0.0,
            "val_n_images": 300.0,
        }
        for e in (1, 2)
    ]
    (tmp_path / "checkpoints").mkdir()
    state = {"epoch": 2, "best_epoch": 2, "stopped": False, "history": history, "bad": 0, "best": 0.4}
    torch.save({"state": state, "model": {}}, tmp_path / "checkpoints" / "last.pt")
    res = runner.invoke(app, ["models", "curves", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "epoch   2  loss 0.5000" in res.output and "map_50=0.400" in res.output and "n_images" not in res.output
    assert "2 epochs done (still running or resumable); best epoch 2" in res.output
    assert (tmp_path / "plots" / "curves.png").stat().st_size > 5000
    none = runner.invoke(app, ["models", "curves", str(tmp_path / "nope")])
    assert none.exit_code == 2 and "has not finished an epoch yet" in none.output
