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


def test_cluster_profile_points_every_store_off_the_machine_defaults(tmp_path: Path) -> None:
    """TAILOR_PROFILE=cluster moves every store: no SQLite URL, no local artifact path, the
    DVC remote in the bucket; the generated credentials sit in var/cluster, 0600."""
    import stat

    s = Settings(root=tmp_path, profile="cluster")
    urls = [
        s.airflow_db_url,
        s.mlflow_backend_uri,
        s.closet_db_url,
        s.mlflow_tracking_uri,
        s.mlflow_artifacts_uri,
        s.dvc_remote,
        s.celery_broker_url,
        s.celery_result_backend,
    ]
    assert not any("sqlite" in str(u) for u in urls), urls
    assert s.airflow_executor == "CeleryExecutor"
    assert str(s.airflow_db_url).startswith("postgresql+psycopg://tailor:") and str(s.airflow_db_url).endswith(
        "/airflow"
    )
    assert (
        s.mlflow_tracking_uri == f"http://127.0.0.1:{s.mlflow_port}" and s.mlflow_artifacts_uri == "s3://tailor/mlflow"
    )
    assert s.dvc_remote == "s3://tailor/dvc" and str(s.celery_broker_url).startswith("redis://:")
    secrets = tmp_path / "var" / "cluster" / "secrets.json"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    # the same credentials on every read; an explicit URL wins over the derived one
    assert Settings(root=tmp_path, profile="cluster").airflow_db_url == s.airflow_db_url
    managed = Settings(root=tmp_path, profile="cluster", airflow_db_url="postgresql+psycopg://u@db.example/af")
    assert managed.airflow_db_url == "postgresql+psycopg://u@db.example/af"
    # the embedded default is unchanged and generates nothing
    e = Settings(root=tmp_path / "e")
    assert e.airflow_executor == "LocalExecutor" and str(e.mlflow_tracking_uri).startswith("sqlite:///")
    assert not (tmp_path / "e" / "var" / "cluster").exists()
