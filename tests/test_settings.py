from pathlib import Path

from pipelines.settings import PROJECT_ROOT, Settings


def test_paths_derive_from_root(tmp_path: Path) -> None:
    s = Settings(root=tmp_path)
    assert s.data_dir == tmp_path / "data"
    assert s.airflow_home == tmp_path / "var" / "airflow"
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert s.mlflow_artifacts_dir == tmp_path / "mlflow" / "artifacts"
    assert s.dags_dir == tmp_path / "dags"
    assert s.host == "127.0.0.1"


def test_every_value_overridable_by_env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TAILOR_ROOT", str(tmp_path))
    monkeypatch.setenv("TAILOR_AIRFLOW_HOME", str(tmp_path / "af"))
    monkeypatch.setenv("TAILOR_MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    monkeypatch.setenv("TAILOR_AIRFLOW_PORT", "18080")
    s = Settings()
    assert s.root == tmp_path
    assert s.airflow_home == tmp_path / "af"
    assert s.data_dir == tmp_path / "data"  # still derived from the overridden root
    assert s.mlflow_tracking_uri == "http://127.0.0.1:5999"
    assert s.airflow_port == 18080
    assert s.url(s.airflow_port, "/x") == "http://127.0.0.1:18080/x"


def test_no_work_at_import_and_defaults_point_into_project() -> None:
    s = Settings()
    assert s.root == PROJECT_ROOT
    assert Path(s.airflow_home).is_relative_to(PROJECT_ROOT)
