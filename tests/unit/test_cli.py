import json
from pathlib import Path

from typer.testing import CliRunner

from loanstream.cli import app
from loanstream.contracts import CONTRACTS
from loanstream.errors import SpecError

runner = CliRunner()


def test_schema_writes_one_json_schema_per_contract(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(f"{name}.schema.json" for name in CONTRACTS)
    application = json.loads((tmp_path / "LoanApplication.schema.json").read_text())
    features = application["$defs"]["Features"]["properties"]
    assert features["loan_purpose"]["enum"][0] == "debt_consolidation"
    outcome = json.loads((tmp_path / "Outcome.schema.json").read_text())
    assert outcome["properties"]["label"]["enum"] == [0, 1]


def test_spec_check_accepts_the_default_and_names_the_problem_of_a_bad_one(
    tmp_path: Path,
) -> None:
    default = Path(__file__).resolve().parents[2] / "loanstream" / "specs" / "loan.yaml"
    ok = runner.invoke(app, ["spec", "check", str(default)])
    assert ok.exit_code == 0
    assert "valid spec 'loan-application' with 10 features" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nid_column: id\nevent_time_column: ts\ntarget_column: y\n")
    result = runner.invoke(app, ["spec", "check", str(bad)])
    assert isinstance(result.exception, SpecError)
    assert str(result.exception) == f"invalid feature spec {bad}: features: Field required"
