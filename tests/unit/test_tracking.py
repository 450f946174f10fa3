"""One tracking setting for all services: a service's own over MLFLOW_TRACKING_URI over the
SQLite file in its data dir; and where a new experiment keeps its artifacts."""

from pathlib import Path

import pytest

from loanstream.tracking import resolve_tracking_uri, serves_artifacts, sqlite_file
from monitor.settings import MonitorSettings
from scorer.settings import ScorerSettings
from trainer.registry import Registry
from trainer.settings import TrainerSettings

SERVICES = {"SCORER": ScorerSettings, "MONITOR": MonitorSettings, "TRAINER": TrainerSettings}
SERVER = "http://mlflow.internal:5000"


def test_the_own_setting_wins_then_the_shared_one_then_the_data_dirs_sqlite_file() -> None:
    data = Path("/srv/data")
    assert resolve_tracking_uri("sqlite:////own.db", SERVER, data) == "sqlite:////own.db"
    assert resolve_tracking_uri(None, SERVER, data) == SERVER
    assert resolve_tracking_uri("", SERVER, data) == SERVER  # an empty variable is unset
    assert resolve_tracking_uri(None, None, data) == "sqlite:////srv/data/mlflow.db"
    assert resolve_tracking_uri(None, "", data) == "sqlite:////srv/data/mlflow.db"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_reads_the_shared_variable_under_its_own(
    service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = SERVICES[service]
    monkeypatch.setenv(f"LOANSTREAM_{service}_DATA_DIR", str(tmp_path))
    assert settings().resolved_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", SERVER)
    assert settings().resolved_tracking_uri() == SERVER

    monkeypatch.setenv(f"LOANSTREAM_{service}_TRACKING_URI", f"sqlite:///{tmp_path}/own.db")
    assert settings().resolved_tracking_uri() == f"sqlite:///{tmp_path}/own.db"
    # and as arguments, the way the demo, backtests and benchmarks build them
    assert settings(tracking_uri="sqlite:////x.db").resolved_tracking_uri() == "sqlite:////x.db"
    monkeypatch.delenv(f"LOANSTREAM_{service}_TRACKING_URI")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert settings(mlflow_tracking_uri=SERVER).resolved_tracking_uri() == SERVER


def test_the_shared_variable_takes_no_service_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOANSTREAM_SCORER_MLFLOW_TRACKING_URI is no setting: only MLflow's own name is read."""
    monkeypatch.setenv("LOANSTREAM_SCORER_MLFLOW_TRACKING_URI", SERVER)
    settings = ScorerSettings(data_dir=tmp_path)
    assert settings.resolved_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"


def test_the_trainer_makes_the_folder_of_any_sqlite_store_it_is_given(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b"
    TrainerSettings(data_dir=tmp_path / "data").resolved_tracking_uri()
    assert (tmp_path / "data").is_dir()
    TrainerSettings(mlflow_tracking_uri=f"sqlite:///{deep}/m.db").resolved_tracking_uri()
    assert deep.is_dir()
    assert sqlite_file("sqlite://") is None and sqlite_file(SERVER) is None


def test_artifacts_go_through_a_tracking_server_and_to_the_data_dir_otherwise(
    tmp_path: Path,
) -> None:
    assert serves_artifacts(SERVER) and serves_artifacts("https://mlflow.example.com")
    assert not serves_artifacts(f"sqlite:///{tmp_path}/mlflow.db")
    assert not serves_artifacts(f"file://{tmp_path}/mlruns")
    registry = Registry(TrainerSettings(data_dir=tmp_path))
    assert registry._artifact_location(SERVER) is None  # the server's mlflow-artifacts:/
    assert not (tmp_path / "mlartifacts").exists()
    local = registry._artifact_location(f"sqlite:///{tmp_path}/mlflow.db")
    assert local == (tmp_path / "mlartifacts").resolve().as_uri()
    assert (tmp_path / "mlartifacts").is_dir()
