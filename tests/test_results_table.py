"""`aresnb results`: the effect table says which outcomes failed, and only the marked README section changes."""

import pytest

from aresnb.results_table import END, START, effect_table, update_readme


def _effect(passes):
    return {"seeds": [0, 1, 2], "wall_time_s": 600.0,
            "verdicts": [{"outcome": f"outcome {i}", "pass": p, "detail": f"figure {i}"} for i, p in enumerate(passes)]}


def test_effect_table_marks_every_failed_outcome():
    table = effect_table(_effect([True, False, False]))
    rows = [line for line in table.splitlines() if line.startswith("| outcome ") and "reached" not in line]
    assert rows == ["| outcome 0 | yes | figure 0 |", "| outcome 1 | **no** | figure 1 |",
                    "| outcome 2 | **no** | figure 2 |"]
    assert "Seeds 0, 1, 2; 10.0 min" in table


def test_update_readme_replaces_only_the_marked_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n{START}\nold\n{END}\n## next\nkept $1 \\1\n")
    update_readme(readme, "new table with \\1 and $1")
    assert readme.read_text() == f"# title\n{START}\nnew table with \\1 and $1\n{END}\n## next\nkept $1 \\1\n"


def test_update_readme_without_markers_is_an_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="results:start"):
        update_readme(readme, "x")
    assert readme.read_text() == "# no markers\n"
