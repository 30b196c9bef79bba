"""The one switch between skipping and failing (conftest.absent): outside CI a test whose
by-design absent dependency is missing skips; under ARESNB_STRICT=1, which .ci/run sets, it fails."""

import ast
import re

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


# ---- every skip goes through absent() ---------------------------------------------------------
SKIPS = {("pytest", "skip"), ("pytest", "importorskip"), ("pytest", "mark", "skip"), ("pytest", "mark", "skipif")}


def _dotted(node: ast.AST) -> tuple[str, ...]:
    """``pytest.mark.skipif`` -> ("pytest", "mark", "skipif"); () for anything but a dotted name."""
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return (*head, node.attr) if head else ()
    return ()


def skips_in(source: str) -> list[int]:
    """Lines of ``source`` that skip a test other than through absent(): calls of pytest.skip or
    pytest.importorskip, @pytest.mark.skip / skipif, or those names imported from pytest."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and _dotted(node.func) in SKIPS:
            lines.append(node.lineno)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            lines += [d.lineno for d in node.decorator_list if _dotted(d) in SKIPS]  # bare @pytest.mark.skip
        elif isinstance(node, ast.ImportFrom) and node.module in ("pytest", "pytest.mark"):
            lines += [node.lineno for a in node.names if a.name in ("skip", "importorskip", "skipif")]
    return sorted(lines)


def test_the_skip_finder_finds_every_form():
    # "pytest.skip ('x')": a call all the same, which the text search of ../shared/hooks does not take
    # for a real skip in this file
    source = ("import pytest\nfrom pytest import skip\n@pytest.mark.skip\ndef a():\n    pytest.skip ('x')\n"
              "@pytest.mark.skipif(True, reason='y')\ndef b():\n    pytest.importorskip('z')\n"
              "def c():\n    raise pytest.skip.Exception\n")
    assert skips_in(source) == [2, 3, 5, 6, 8]  # pytest.skip.Exception is a name, not a skip


def test_no_test_skips_except_through_absent():
    files = sorted((ROOT / "tests").rglob("*.py"))
    found = {f.relative_to(ROOT).as_posix(): skips_in(f.read_text()) for f in files}
    assert len(found.pop("tests/conftest.py")) == 1  # absent()'s own pytest.skip, the only one
    offenders = {name: lines for name, lines in found.items() if lines}
    assert not offenders, f"skips that ARESNB_STRICT=1 cannot turn into failures (use conftest.absent): {offenders}"


def test_a_subprocess_times_out_before_pytest_does():
    """pytest-timeout stops a test (fixture set-up included) at pyproject's limit; the subprocesses the
    tests wait on must stop first, or their own time-outs could never fire and a hang would report
    nothing of what the run printed."""
    import tomllib

    from conftest import ROOT, SUBPROCESS_TIMEOUT_S

    limit = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["timeout"]
    assert SUBPROCESS_TIMEOUT_S < limit
    too_long = []
    for f in sorted((ROOT / "tests").glob("*.py")):
        for n in re.findall(r"timeout=(\d+)", f.read_text()):
            if int(n) >= limit:
                too_long.append(f"{f.name}: timeout={n}")
    assert not too_long, too_long
