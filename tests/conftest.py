"""Shared by every test: no test may reach a tracking server the developer's shell names."""

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _no_shared_tracking_server() -> Iterator[None]:
    """MLFLOW_TRACKING_URI, exported for a team's MLflow server, would send the models that tests
    train (they pass only a data dir) to that server; a test that means to sets it itself. Session
    scope: module fixtures that train read the environment before any function fixture runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield


@pytest.fixture(autouse=True)
def _tracking_server_left_as_found() -> Iterator[None]:
    """``mlflow.set_tracking_uri`` also writes MLFLOW_TRACKING_URI into the environment, where
    the next test's settings would find it and share one store with this one: put it back."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
