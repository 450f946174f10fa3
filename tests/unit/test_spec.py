from pathlib import Path

import pytest
import yaml

from loanstream.errors import SpecError
from loanstream.spec import load_spec, parse_spec

MINIMAL = {
    "name": "mine",
    "id_column": "id",
    "event_time_column": "ts",
    "target_column": "y",
    "features": [{"name": "x", "type": "numeric", "min": 0, "max": 1}],
}


def with_(**changes: object) -> dict[str, object]:
    return {**MINIMAL, **changes}


def test_default_spec_describes_a_loan_application() -> None:
    spec = load_spec()
    assert spec.name == "loan-application"
    assert (spec.id_column, spec.event_time_column, spec.target_column) == (
        "application_id",
        "applied_at",
        "repaid",
    )
    assert spec.feature_names == [
        "income",
        "age",
        "employment_length",
        "loan_amount",
        "term_months",
        "interest_rate",
        "credit_score",
        "debt_to_income",
        "loan_purpose",
        "home_ownership",
    ]
    assert [f.name for f in spec.categorical_features] == ["loan_purpose", "home_ownership"]
    assert spec.feature("employment_length").nullable
    assert not spec.feature("income").nullable


def test_a_users_own_spec_with_other_columns_loads(tmp_path: Path) -> None:
    path = tmp_path / "cars.yaml"
    path.write_text(
        yaml.safe_dump(
            with_(
                features=[
                    {"name": "vehicle_age", "type": "integer", "min": 0, "max": 30},
                    {
                        "name": "region",
                        "type": "categorical",
                        "values": ["north", "south"],
                        "nullable": True,
                    },
                ]
            )
        )
    )
    spec = load_spec(path)
    assert spec.feature_names == ["vehicle_age", "region"]
    assert spec.fingerprint != load_spec().fingerprint


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {k: v for k, v in MINIMAL.items() if k != "id_column"},
            "invalid feature spec <t>: id_column: Field required",
        ),
        (
            with_(features=[{"name": "x", "type": "float", "min": 0, "max": 1}]),
            "invalid feature spec <t>: features.0: Input tag 'float' found using 'type' "
            "does not match "
            "any of the expected tags: 'numeric', 'integer', 'categorical'",
        ),
        (
            with_(features=[{"name": "x", "type": "numeric", "min": 5, "max": 1}]),
            "invalid feature spec <t>: features.0: min must be below max, got min=5.0 max=1.0",
        ),
        (
            with_(features=[{"name": "c", "type": "categorical", "values": []}]),
            "invalid feature spec <t>: features.0.values: List should have at least 1 item after "
            "validation, not 0",
        ),
        (
            with_(features=[{"name": "c", "type": "categorical", "values": ["a", "b", "a"]}]),
            "invalid feature spec <t>: features.0: values must be unique, repeated: ['a']",
        ),
        (
            with_(features=[{"name": "y", "type": "numeric", "min": 0, "max": 1}]),
            "invalid feature spec <t>: id, event-time, target and feature columns "
            "must have distinct "
            "names, repeated: ['y']",
        ),
        (
            with_(features=[]),
            "invalid feature spec <t>: features: List should have at least 1 item "
            "after validation, "
            "not 0",
        ),
        (
            with_(features=[{"name": "x", "type": "numeric", "max": 1}]),
            "invalid feature spec <t>: features.0.min: Field required",
        ),
        (with_(colour="blue"), "invalid feature spec <t>: colour: Extra inputs are not permitted"),
        (
            with_(features=[{"name": "bad name", "type": "numeric", "min": 0, "max": 1}]),
            "invalid feature spec <t>: features.0.name: String should match pattern "
            "'^[A-Za-z_][A-Za-z0-9_]*$'",
        ),
        (
            ["not", "a", "mapping"],
            "invalid feature spec <t>: expected a mapping at the top level, got list",
        ),
        (
            with_(
                features=[{"name": "x", "type": "numeric", "min": 0, "max": 1, "protected": "no"}]
            ),
            "invalid feature spec <t>: features.0.protected: Input should be a valid boolean",
        ),
    ],
)
def test_invalid_specs_are_refused_with_a_message_naming_the_problem(
    document: object, message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(document, "<t>")
    assert str(caught.value) == message


def test_unreadable_and_malformed_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^cannot read feature spec .*nope.yaml: No such file"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("features: [unclosed\n")
    with pytest.raises(SpecError, match=r"^invalid feature spec .*bad.yaml: not valid YAML"):
        load_spec(bad)


def test_the_loan_spec_protects_age_and_describes_every_feature() -> None:
    spec = load_spec()
    assert spec.protected_features == {"age"}
    assert spec.feature("age").protected and not spec.feature("credit_score").protected
    assert set(spec.descriptions) == set(spec.feature_names)  # each reason has its words


def test_protected_is_false_unless_said_and_leaves_the_fingerprint_alone() -> None:
    plain = parse_spec(MINIMAL)
    assert not plain.feature("x").protected and plain.protected_features == frozenset()
    x = {"name": "x", "type": "numeric", "min": 0, "max": 1}
    marked = parse_spec(with_(features=[{**x, "protected": True}]))
    assert marked.protected_features == {"x"}
    # It says what may explain a decision, not what the data is: models keep their fingerprint.
    assert marked.fingerprint == plain.fingerprint
    described = parse_spec(with_(features=[{**x, "description": "an x"}]))
    assert described.fingerprint != plain.fingerprint
