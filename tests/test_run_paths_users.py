"""Who knows run folders: ``aresnb.paths.RunPaths`` is imported only by the stage floor (its
driver and steps among it), the runner and the CLI.
The figures, the report and the benchmarks are functions of what ``aresnb.stages.results`` reads; a new import
of RunPaths anywhere else fails here. The panels (widgets/) and the Figure-3 page are functions of
what ``aresnb.stages.results`` read: they import no path helper, no stage and no Teacher."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aresnb"
BENCHMARKS = PACKAGE.parent / "benchmarks"
ALLOWED = {"paths.py", "pipeline/cli.py", "pipeline/runner.py", "stages/*"}


def _imports_run_paths(file: Path) -> bool:
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "aresnb.paths":
            if any(alias.name == "RunPaths" for alias in node.names):
                return True
    return False


def _allowed(rel: str) -> bool:
    return rel in ALLOWED or any(a.endswith("/*") and rel.startswith(a[:-1]) for a in ALLOWED)


def test_only_the_stages_the_driver_and_the_listed_readers_import_run_paths():
    users = {str(f.relative_to(PACKAGE)) for f in PACKAGE.rglob("*.py") if _imports_run_paths(f)}
    assert users, "the scan finds no importer at all: it is broken"
    assert {u for u in users if not _allowed(u)} == set()
    assert not any(u.startswith("present/") for u in users)  # they take RunResults


def test_the_benchmarks_read_runs_through_stages_results_and_import_no_run_paths():
    """Every benchmark that reads a finished run does it through ``read_run_dir`` or
    ``read_problem_outcomes_dir``: none imports RunPaths or a path helper of its own."""
    readers = {f.name for f in BENCHMARKS.glob("*.py") if "aresnb.stages.results" in _imported_modules(f)}
    assert {"ablation.py", "ares_effect.py", "llm_teacher_agreement.py", "stage_cost.py"} <= readers
    assert sorted(f.name for f in BENCHMARKS.glob("*.py") if _imports_run_paths(f)) == []


VIEWS = sorted([*(PACKAGE / "present" / "widgets").glob("*.py"), PACKAGE / "present" / "figure3.py"])


def _imported_modules(file: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):  # deferred imports inside functions too
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from aresnb import paths`
    return found


def _forbidden_in_a_view(module: str) -> bool:
    if module == "aresnb.stages.results" or module.startswith("aresnb.stages.results."):
        return False
    return any(module == m or module.startswith(m + ".") for m in ("aresnb.paths", "aresnb.stages", "aresnb.teacher"))


def test_panels_and_figure3_import_no_paths_no_stage_and_no_teacher():
    assert len(VIEWS) >= 5 and (PACKAGE / "present" / "widgets" / "rationale_panel.py") in VIEWS
    found = {str(f.relative_to(PACKAGE)): sorted(m for m in _imported_modules(f) if _forbidden_in_a_view(m))
             for f in VIEWS}
    assert {f: ms for f, ms in found.items() if ms} == {}
    assert "aresnb.stages.results" in _imported_modules(PACKAGE / "present" / "figure3.py")  # the scan sees what it checks
