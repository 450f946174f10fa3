"""The REST API's start-up refusals: an unusable key, or an API anyone on the network could
reach without one."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError
from typer import Typer
from typer.testing import CliRunner

from loanstream.errors import LoanStreamError
from scorer.cli import register, scorer_settings
from scorer.settings import ScorerSettings

EXPOSED = (
    "the REST API on '0.0.0.0' would score for anyone who can reach it: set "
    "LOANSTREAM_SCORER_API_KEY, bind it to 127.0.0.1, ::1 or localhost, or opt out with "
    "--insecure-no-auth (LOANSTREAM_SCORER_API_INSECURE_NO_AUTH=true)"
)


@pytest.fixture(autouse=True)
def no_scorer_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("API_KEY", "API_HOST", "API_PORT", "API_INSECURE_NO_AUTH"):
        monkeypatch.delenv(f"LOANSTREAM_SCORER_{name}", raising=False)


def test_an_empty_key_is_refused_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOANSTREAM_SCORER_API_KEY", "")
    with pytest.raises(ValidationError) as refused:
        ScorerSettings()
    assert [(e["loc"], str(e["ctx"]["error"])) for e in refused.value.errors()] == [
        (
            ("api_key",),
            "must not be empty; set a key, or unset it to serve without one (loopback only)",
        )
    ]


@pytest.mark.parametrize("key", [" s3cret", "s3 cret", "s3cret\n", "sécret"])
def test_a_key_no_header_can_carry_is_refused(key: str) -> None:
    with pytest.raises(ValidationError, match="must be visible ASCII characters without spaces"):
        ScorerSettings(api_key=SecretStr(key))


def test_a_key_is_taken_as_given() -> None:
    key = ScorerSettings(api_key=SecretStr("s3cret!~")).api_key
    assert key is not None and key.get_secret_value() == "s3cret!~"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "LOCALHOST", "127.0.0.2"])
def test_loopback_needs_no_key(host: str) -> None:
    assert ScorerSettings(api_host=host).api_host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "scorer.internal", ""])
def test_any_other_host_needs_a_key(host: str) -> None:
    with pytest.raises(ValidationError, match="would score for anyone who can reach it"):
        ScorerSettings(api_host=host)
    assert ScorerSettings(api_host=host, api_key=SecretStr("k")).api_host == host
    assert ScorerSettings(api_host=host, api_insecure_no_auth=True).api_host == host
    assert ScorerSettings(api_host=host, api_port=None).api_port is None  # no API, no exposure


def test_the_opt_out_comes_from_the_environment_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOANSTREAM_SCORER_API_HOST", "0.0.0.0")
    with pytest.raises(ValidationError):
        ScorerSettings()
    monkeypatch.setenv("LOANSTREAM_SCORER_API_INSECURE_NO_AUTH", "true")
    assert ScorerSettings().api_insecure_no_auth is True


def test_the_command_line_is_validated_with_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(LoanStreamError) as refused:
        scorer_settings(9000, "0.0.0.0", insecure_no_auth=False, no_api=False)
    assert str(refused.value) == f"scorer settings refused: {EXPOSED}"
    opted_out = scorer_settings(9000, "0.0.0.0", insecure_no_auth=True, no_api=False)
    assert (opted_out.api_port, opted_out.api_host, opted_out.api_insecure_no_auth) == (
        9000,
        "0.0.0.0",
        True,
    )
    assert scorer_settings(9000, "0.0.0.0", insecure_no_auth=False, no_api=True).api_port is None
    monkeypatch.setenv("LOANSTREAM_SCORER_API_KEY", "")
    with pytest.raises(LoanStreamError) as empty:
        scorer_settings(None, None, insecure_no_auth=False, no_api=False)
    assert str(empty.value) == (
        "scorer settings refused: LOANSTREAM_SCORER_API_KEY: must not be empty; set a key, or "
        "unset it to serve without one (loopback only)"
    )


def test_the_scorer_command_refuses_an_exposed_api_before_starting() -> None:
    app = Typer()
    register(app)
    result = CliRunner().invoke(app, ["scorer", "--api-host", "0.0.0.0", "--api-port", "9000"])
    assert isinstance(result.exception, LoanStreamError)
    assert str(result.exception) == f"scorer settings refused: {EXPOSED}"
