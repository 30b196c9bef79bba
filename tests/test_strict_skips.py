"""The one switch between skipping and failing (conftest.absent): outside CI a test whose
by-design absent dependency is missing skips; under ARESNB_STRICT=1, which .ci/run sets, it fails."""

import pytest

from conftest import ROOT, STRICT_VAR, absent


def outcome_of_absent(what: str) -> tuple[str, str]:
    """('skip' | 'fail', message) of calling absent(what), caught here so neither ends this test."""
    try:
        absent(what)
    except pytest.skip.Exception as e:
        return "skip", str(e)
    except pytest.fail.Exception as e:
        return "fail", str(e)
    return "returned", ""


def test_absent_skips_outside_ci_and_fails_under_strict(monkeypatch):
    monkeypatch.delenv(STRICT_VAR, raising=False)
    assert outcome_of_absent("no chromium here") == ("skip", "no chromium here")
    monkeypatch.setenv(STRICT_VAR, "1")
    kind, message = outcome_of_absent("no chromium here")
    assert kind == "fail" and message.startswith("no chromium here; ARESNB_STRICT=1")


def test_ci_runs_the_suite_strict():
    assert f"export {STRICT_VAR}=1" in (ROOT / ".ci" / "run").read_text()
