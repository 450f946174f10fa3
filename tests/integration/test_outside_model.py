"""A model trained outside LoanStream, with a transformer class of its owner's own, is registered
by `loanstream model register --trust` (a real process) and served by a real scorer process over
REST and on the stream, each probability the model's own predict_proba."""

from __future__ import annotations

import importlib
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import skops.io as sio
from confluent_kafka import Producer
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from loanstream.config import KafkaSettings
from loanstream.contracts import Prediction
from loanstream.kafka.broker import free_port
from loanstream.spec import FeatureSpec, load_spec
from loanstream.topics import APPLICATIONS, PREDICTIONS, create_topics
from tests.helpers import application_json
from tests.integration.consume import read_all
from tests.integration.processes import Service, service_env, wait_for
from tests.trainer_data import history
from trainer.data import labelled_frame
from trainer.settings import TrainerSettings

# The owner's own code: a module the scorer can import (on its PYTHONPATH), as a user's package.
OWN_MODULE = """
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class Winsorizer(BaseEstimator, TransformerMixin):
    def fit(self, X, y=None):
        values = np.asarray(X, dtype=float)
        self.low_ = np.nanpercentile(values, 1, axis=0)
        self.high_ = np.nanpercentile(values, 99, axis=0)
        return self

    def transform(self, X):
        return np.clip(np.asarray(X, dtype=float), self.low_, self.high_)
"""


def outside_model(spec: FeatureSpec, frame: pd.DataFrame, module: str) -> CalibratedClassifierCV:
    winsorizer = importlib.import_module(module).Winsorizer
    numeric = [f.name for f in spec.numeric_features]
    categorical = [f.name for f in spec.categorical_features]
    numbers = Pipeline([("i", SimpleImputer()), ("w", winsorizer()), ("s", StandardScaler())])
    prepare = ColumnTransformer(
        [("n", numbers, numeric), ("c", OneHotEncoder(handle_unknown="ignore"), categorical)]
    )
    model = CalibratedClassifierCV(
        Pipeline([("p", prepare), ("m", LogisticRegression(max_iter=1000))]), cv=3
    )
    return model.fit(frame[spec.feature_names], frame[spec.target_column])


def own_probability(model: CalibratedClassifierCV, spec: FeatureSpec, features: dict) -> float:
    row = pd.DataFrame([{n: features.get(n) for n in spec.feature_names}])
    return float(model.predict_proba(row)[0, 1])


def test_an_outside_model_is_registered_and_served_over_rest_and_the_stream(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    spec = load_spec()
    module = f"own_features_{os.getpid()}"
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{module}.py").write_text(textwrap.dedent(OWN_MODULE))
    sys.path.insert(0, str(code))
    try:
        frame = labelled_frame(*history(8000, seed=4))[0]
        model = outside_model(spec, frame, module)
    finally:
        sys.path.remove(str(code))
    sio.dump(model, tmp_path / "model.skops")
    frame.to_parquet(tmp_path / "history.parquet")

    create_topics(kafka)
    settings = TrainerSettings(data_dir=tmp_path / "data")
    python_path = os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")])
    env = {
        **service_env(kafka, settings),
        "LOANSTREAM_TRAINER_DATA_DIR": str(settings.data_dir),
        "PYTHONPATH": python_path,
        "COLUMNS": "400",
    }
    register = subprocess.run(
        [
            sys.executable,
            "-m",
            "loanstream.cli",
            "model",
            "register",
            str(tmp_path / "model.skops"),
            "--data",
            str(tmp_path / "history.parquet"),
            "--trust",
            f"{module}.Winsorizer",
            "--max-ece",
            "0.08",
            "--promote",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert register.returncode == 0, register.stdout + register.stderr
    assert "Registered loan-repayment v1 (calibrated as it came" in register.stdout
    assert "v1 is champion (ModelUpdate published)" in register.stdout

    port = free_port()
    scorer = Service(["scorer", "--api-port", str(port)], env, tmp_path / "scorer.log")
    try:
        url = f"http://127.0.0.1:{port}"
        loaded = wait_for(lambda: httpx.get(f"{url}/v1/model").json().get("version") == "1", 120)
        assert loaded, (tmp_path / "scorer.log").read_text()[-3000:]

        bodies = [application_json(spec, i, random.Random(i)) for i in range(20)]
        for body in bodies[:5]:
            answer = httpx.post(f"{url}/v1/score", content=body, timeout=30)
            assert answer.status_code == 200, answer.text
            scored = answer.json()
            expected = own_probability(model, spec, json.loads(body)["features"])
            assert scored["model_version"] == "1"
            assert abs(scored["probability"] - expected) < 1e-9

        producer = Producer(kafka.confluent())
        for body in bodies:
            key = json.loads(body)["application_id"].encode()
            producer.produce(kafka.topic(APPLICATIONS), key=key, value=body)
        producer.flush(30)
        messages = read_all(kafka, kafka.topic(PREDICTIONS), len(bodies), timeout_s=120)
        predictions = {
            p.application_id: p for p in (Prediction.from_json(m.value()) for m in messages)
        }
        assert len(predictions) == len(bodies)
        for body in bodies:
            sent = json.loads(body)
            prediction = predictions[sent["application_id"]]
            assert prediction.model_version == "1"
            expected = own_probability(model, spec, sent["features"])
            assert np.isclose(prediction.probability, expected, rtol=0, atol=1e-9)
    finally:
        scorer.stop()
