"""Who knows run folders: ``aresnb.paths.RunPaths`` is imported only by the stage floor, the
driver (runner, steps, CLI).
The figures and the report are functions of ``aresnb.stages.results.RunResults``; a new import
of RunPaths anywhere else fails here."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aresnb"
ALLOWED = {"paths.py", "cli.py", "runner.py", "steps.py", "stages/*"}


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
    assert not any(u.startswith(("plots/", "report/", "results_table")) for u in users)  # they take RunResults
