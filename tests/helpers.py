"""Small, seeded test data built from the feature spec (no loan column is named here)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

from loanstream.spec import CategoricalFeature, FeatureSpec

T0 = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


def sample_features(spec: FeatureSpec, rng: random.Random) -> dict[str, object]:
    features: dict[str, object] = {}
    for f in spec.features:
        if isinstance(f, CategoricalFeature):
            features[f.name] = rng.choice(f.values)
        elif f.type == "integer":
            features[f.name] = rng.randint(int(f.min), int(f.max))
        else:
            features[f.name] = round(rng.uniform(f.min, f.max), 4)
    return features


def application_json(spec: FeatureSpec, i: int, rng: random.Random) -> bytes:
    return json.dumps(
        {
            "application_id": f"app-{i:07d}",
            "event_time": (T0 + timedelta(seconds=i)).isoformat(),
            "features": sample_features(spec, rng),
        }
    ).encode()
