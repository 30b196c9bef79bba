"""The package's folders are its floors (docs/architecture.md, "Layers"): no import goes up a floor,
no two folders import each other, and no file imports itself through others. The arrows are
benchmarks/import_graph.py's, every import of a file counted (deferred ones too)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import import_graph  # noqa: E402

FLOORS = {  # docs/architecture.md's drawing, bottom up
    0: {"aresnb", "aresnb.config", "aresnb.paths", "aresnb.io", "aresnb.errors", "aresnb.progress",
        "aresnb.paper_numbers"},
    1: {"aresnb.data", "aresnb.text"},
    2: {"aresnb.model", "aresnb.teacher", "aresnb.evaluation"},
    3: {"aresnb.rl", "aresnb.sft"},
    4: {"aresnb.stages"},
    5: {"aresnb.present"},
    6: {"aresnb.pipeline"},
}
FLOOR = {room: n for n, rooms in FLOORS.items() for room in rooms}
# config validates data.source and teacher.reference_error_rate against the two registries
UP_ON_PURPOSE = {("aresnb.config.loading", "aresnb.data.registry"), ("aresnb.config.loading", "aresnb.data.schema"),
                 ("aresnb.config.loading", "aresnb.teacher.backends")}


def _arrows() -> set[tuple[str, str]]:
    return import_graph.arrows(import_graph.sources_at(None))


def test_every_folder_has_a_floor_and_no_arrow_goes_up():
    arrows = _arrows()
    assert len(arrows) > 100, "the scan finds almost no import: it is broken"
    rooms = {import_graph.room(m) for pair in arrows for m in pair}
    assert rooms - set(FLOOR) == set(), "a new folder or top-level module: give it a floor here and in the doc"
    up = sorted((a, b) for a, b in arrows - UP_ON_PURPOSE
                if FLOOR[import_graph.room(a)] < FLOOR[import_graph.room(b)])
    assert up == []
    assert UP_ON_PURPOSE <= arrows, "an exception no longer needed: remove it here and in the doc"


def test_no_two_folders_import_each_other():
    pairs = {(import_graph.room(a), import_graph.room(b)) for a, b in _arrows() - UP_ON_PURPOSE}
    pairs = {(a, b) for a, b in pairs if a != b}
    assert sorted((a, b) for a, b in pairs if (b, a) in pairs and a < b) == []


def test_no_file_imports_itself_through_others():
    graph: dict[str, set[str]] = {}
    for a, b in _arrows():
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := cycle_from(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            assert cycle_from(start, [start]) is None
