"""The one switch between skipping and failing (conftest.absent): outside CI a test whose
by-design absent dependency is missing skips; under ARESNB_STRICT=1, which .ci/run sets, it fails."""

import pytest

from conftest import ROOT, STRICT_VAR, absent


def test_absent_skips_outside_ci_and_fails_under_strict(monkeypatch):
    monkeypatch.delenv(STRICT_VAR, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium here"):
        absent("no chromium here")
    monkeypatch.setenv(STRICT_VAR, "1")
    with pytest.raises(pytest.fail.Exception, match="no chromium here; ARESNB_STRICT=1"):
        absent("no chromium here")


def test_ci_runs_the_suite_strict():
    assert f"export {STRICT_VAR}=1" in (ROOT / ".ci" / "run").read_text()
