"""REST scoring latency: one application per request to /v1/score, sequentially over a kept-alive
connection, on the calibrated hist-gradient-boosting model, with and without reason codes. The
API runs alone in its own process, as in the scorer; the client is this process.

    .venv/bin/python -m bench.rest [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.table import Table

from loanstream.models import LoadedModel
from loanstream.spec import load_spec
from loanstream.validation import ApplicationValidator
from scorer.api import build_api
from scorer.compiled import compile_model
from scorer.holder import ModelHolder
from scorer.metrics import ScorerMetrics
from scorer.settings import ScorerSettings
from tests.trainer_data import history
from trainer.data import labelled_frame
from trainer.pipeline import options_from, training_round
from trainer.registry import Registry
from trainer.settings import TrainerSettings

console = Console()


def serve(model: LoadedModel, reasons: bool, port: int) -> None:
    """The API alone in this process, as the scorer runs it (the client lives in another)."""
    holder = ModelHolder()
    holder.offer(model)
    api = build_api(
        ScorerSettings(reasons=reasons),
        holder,
        ScorerMetrics(CollectorRegistry()),
        ApplicationValidator(load_spec()),
    )
    uvicorn.run(api, host="127.0.0.1", port=port, log_level="error")


def started(model: LoadedModel, reasons: bool, port: int) -> multiprocessing.process.BaseProcess:
    process = multiprocessing.get_context("spawn").Process(
        target=serve, args=(model, reasons, port), daemon=True
    )
    process.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"the API on port {port} did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("out/bench-rest.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = TrainerSettings(data_dir=Path(tmp), candidates=("hgb",), search_candidates=2)
        frame, spec = history(30_000, seed=6)
        good = labelled_frame(frame, spec)[0]
        training_round(good, spec, settings, Registry(settings), options_from(settings), None)
        model = compile_model(Registry(settings).load())
    bodies = [
        json.dumps(
            {
                "application_id": f"r{i}",
                "event_time": "2026-01-01T00:00:00Z",
                "features": {k: (None if v != v else v) for k, v in row.items()},
            }
        )
        for i, row in enumerate(good[spec.feature_names].iloc[: args.requests].to_dict("records"))
    ]
    results = {}
    for port, reasons in ((18181, False), (18182, True)):
        server = started(model, reasons, port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for body in bodies[:50]:  # warm-up
                client.post("/v1/score", content=body)
            ms = []
            for body in bodies:
                began = time.perf_counter()
                response = client.post("/v1/score", content=body)
                ms.append((time.perf_counter() - began) * 1000)
                assert response.status_code == 200, response.text
        server.terminate()
        server.join()
        results["on" if reasons else "off"] = {
            f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 95, 99)
        }
    table = Table(title=f"REST /v1/score, one application per request, {args.requests} requests")
    for column in ("reasons", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column)
    for key, row in results.items():
        table.add_row(key, *(f"{row[k]:.2f}" for k in ("p50_ms", "p95_ms", "p99_ms")))
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
