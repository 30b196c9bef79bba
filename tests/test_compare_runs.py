"""benchmarks/compare_runs.py, the before/after check of a refactoring, on two hand-made run folders."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compare_runs  # noqa: E402


def _run(root: Path, loss: float, table: str, pdf_date: str) -> Path:
    (root / "02_baseline").mkdir(parents=True)
    (root / "tables").mkdir()
    (root / "figures").mkdir()
    (root / "tracking" / str(pdf_date)).mkdir(parents=True)  # timestamped: never compared
    calls = 0 if pdf_date == "2" else 7  # a later run found the replies in the shared cache
    usage = {"requests": 7, "cache_hits": 7 - calls, "calls": calls, "prompt_tokens": 100 * calls}
    summary = {"stage": "02_baseline", "loss": loss, "wall_time_s": float(pdf_date), "model_dir": str(root / "m"),
               "teacher": usage}
    (root / "02_baseline" / "summary.json").write_text(json.dumps(summary))
    (root / "tables" / "t.csv").write_text(table)
    (root / "figures" / "f.pdf").write_bytes(b"%PDF /CreationDate (D:" + pdf_date.encode() + b") body")
    return root


def test_the_same_run_elsewhere_and_later_is_the_same(tmp_path):
    a, b = _run(tmp_path / "a", 0.5, "x,1\n", "1"), _run(tmp_path / "b", 0.5, "x,1\n", "2")
    assert compare_runs.compare(a, b) == []
    assert compare_runs.main([str(a), str(b)]) == 0


def test_a_changed_value_table_or_file_is_reported(tmp_path):
    a, b = _run(tmp_path / "a", 0.5, "x,1\n", "1"), _run(tmp_path / "b", 0.25, "x,2\n", "1")
    (b / "02_baseline" / "extra.json").write_text("{}")
    summary = b / "02_baseline" / "summary.json"
    summary.write_text(summary.read_text().replace('"requests": 7', '"requests": 8'))
    found = compare_runs.compare(a, b)
    assert "02_baseline/summary.json: /loss: 0.5 != 0.25" in found
    assert "02_baseline/summary.json: /teacher/requests: 7 != 8" in found
    assert "tables/t.csv: bytes differ" in found and "only in after: 02_baseline/extra.json" in found
    assert compare_runs.main([str(a), str(b)]) == 1
