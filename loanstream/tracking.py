"""Which MLflow tracking server (or store) a service talks to: one answer for all of them.

MLflow's own variable ``MLFLOW_TRACKING_URI`` is the one setting a team shares: set once, the
scorer, monitor, trainer and every ``loanstream`` command that reads the registry use the same
server. A service's own setting (``LOANSTREAM_SCORER_TRACKING_URI``,
``LOANSTREAM_MONITOR_TRACKING_URI``, ``LOANSTREAM_TRAINER_TRACKING_URI``) still wins, for the
rare process that must look elsewhere; with neither, each uses a SQLite file in its data dir.

>>> resolve_tracking_uri(None, None, Path("/srv/loanstream"))
'sqlite:////srv/loanstream/mlflow.db'
>>> resolve_tracking_uri(None, "http://mlflow:5000", Path("/srv/loanstream"))
'http://mlflow:5000'
>>> resolve_tracking_uri("sqlite:////tmp/own.db", "http://mlflow:5000", Path("/srv/loanstream"))
'sqlite:////tmp/own.db'

Through a tracking server (http or https), artifacts go through the server too: it stores them
where its ``--artifacts-destination`` says and experiments created against it get
``mlflow-artifacts:/`` locations, so a scorer on another host downloads a model from the server,
never from the trainer's disk.

>>> [serves_artifacts(u) for u in ("http://mlflow:5000", "HTTPS://x", "sqlite:////d/m.db")]
[True, True, False]
>>> sqlite_file("sqlite:////srv/loanstream/mlflow.db"), sqlite_file("http://mlflow:5000")
(PosixPath('/srv/loanstream/mlflow.db'), None)
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field

SHARED_VARIABLE = "MLFLOW_TRACKING_URI"


def resolve_tracking_uri(own: str | None, shared: str | None, data_dir: Path) -> str:
    """The service's ``own`` setting, else the ``shared`` MLFLOW_TRACKING_URI, else the SQLite
    file ``mlflow.db`` in ``data_dir``. An empty value counts as unset."""
    return own or shared or f"sqlite:///{data_dir / 'mlflow.db'}"


def serves_artifacts(tracking_uri: str) -> bool:
    """Whether ``tracking_uri`` is a tracking server, which stores and serves the artifacts of
    the experiments created through it (a SQLite or file store leaves them to the client)."""
    return tracking_uri.lower().startswith(("http://", "https://"))


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a SQLite store (whose folder must exist before MLflow opens it),
    None for any other store."""
    path = tracking_uri.removeprefix("sqlite:///")
    return Path(path) if path != tracking_uri and path and path != ":memory:" else None


class SharedTracking(BaseModel):
    """The shared setting, read from ``MLFLOW_TRACKING_URI`` (no LoanStream prefix) by every
    service's settings class; ``resolved_tracking_uri()`` of each puts its own setting over it."""

    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices(SHARED_VARIABLE, "mlflow_tracking_uri"),
        description="MLflow tracking URI shared by every service (MLflow's own variable, "
        "read as MLFLOW_TRACKING_URI); a service's own TRACKING_URI wins over it",
    )


def point_mlflow_at(tracking_uri: str) -> None:
    """``mlflow.set_tracking_uri`` without its side effect on the environment.

    MLflow also writes ``MLFLOW_TRACKING_URI`` into ``os.environ``, which every settings object
    made afterwards would read as the user's shared setting: in one process, a second registry
    (a backtest's, a test's) would silently use the first one's store.

    >>> import os
    >>> _ = os.environ.pop(SHARED_VARIABLE, None)
    >>> point_mlflow_at("sqlite:////tmp/loanstream-doctest.db")
    >>> SHARED_VARIABLE in os.environ
    False
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    before = os.environ.get(SHARED_VARIABLE)
    mlflow.set_tracking_uri(tracking_uri)
    if before is None:
        os.environ.pop(SHARED_VARIABLE, None)
    else:
        os.environ[SHARED_VARIABLE] = before
