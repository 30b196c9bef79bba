"""The package's import arrows between its files, counted the same way at any commit.

An arrow is an ordered pair of aresnb modules (files; a package's ``__init__.py`` is the package)
where the first imports the second anywhere in its source -- at the top, inside a function or
under ``TYPE_CHECKING`` -- counted once however many names or lines. ``from aresnb.x import y``
points at ``aresnb.x.y`` when that is a module, else at ``aresnb.x``; relative imports are
resolved. Also counted: modules, lines, and the arrows between *rooms* (a subpackage of
``aresnb`` is one room, a top-level module is one), the coarser drawing the architecture doc uses;
and, for a commit, the arrows between *today's* rooms over that commit's code (each module put in
the room its code is in today), which tells a moved wall from a removed import.

    .venv/bin/python benchmarks/import_graph.py                   # the working tree
    .venv/bin/python benchmarks/import_graph.py --at 476fed7 HEAD  # commits, from git
    ... --json benchmarks/results/import_graph.json                # also write the counts
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
import subprocess
import sys
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]


def sources_at(commit: str | None) -> dict[str, str]:
    """{path: source} of every aresnb/*.py at ``commit`` (None: the working tree)."""
    if commit is None:
        return {str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "aresnb").rglob("*.py"))}
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", commit, "aresnb"],
                           capture_output=True, text=True, check=True).stdout.split()
    return {n: subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{n}"], capture_output=True, text=True,
                              check=True).stdout for n in names if n.endswith(".py")}


def module_name(path: str) -> str:
    parts = list(PurePosixPath(path).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def arrows(sources: dict[str, str]) -> set[tuple[str, str]]:
    modules = {module_name(p) for p in sources}
    found = set()
    for path, source in sources.items():
        me = module_name(path)
        package = me if path.endswith("__init__.py") else me.rpartition(".")[0]
        for node in ast.walk(ast.parse(source)):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:  # aresnb.x.y.Name -> the module that defines it
                    t = t.rpartition(".")[0]
                if t and t != me:
                    found.add((me, t))
    return found


def room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def moved_to(commit: str) -> dict[str, str]:
    """{module at ``commit``: the module its code is in now (the working tree)}, from git's rename
    detection (a file that kept 30% of its lines is the same file); modules that are still where
    they were, or are gone, are left out."""
    cmd = ["git", "-C", str(ROOT), "diff", "-M30%", "--name-status", commit, "--", "aresnb"]
    out = {}
    for line in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines():
        status, *names = line.split("\t")
        if status.startswith("R") and all(n.endswith(".py") for n in names):
            out[module_name(names[0])] = module_name(names[1])
    return out


def arrows_between_todays_rooms(commit: str, edges: set[tuple[str, str]], today_rooms: set[str]) -> int:
    """The arrows between *today's* rooms (``today_rooms``, the working tree's) drawn over the code as
    it was at ``commit`` (its arrows between files, ``edges``): every module then is put in the room
    its code is in today. With the rooms held fixed, a fall is code that no longer imports across a
    room's wall, not a wall that moved."""
    where = moved_to(commit)
    place = lambda m: room(where.get(m, m))
    placed = {(place(a), place(b)) for a, b in edges}
    unplaced = sorted({r for pair in placed for r in pair} - today_rooms)
    if unplaced:
        print(f"{commit}: modules with no room today (counted as rooms of their own): {unplaced}", file=sys.stderr)
    return len({(a, b) for a, b in placed if a != b})


def counts(commit: str | None, today_rooms: set[str]) -> dict:
    sources = sources_at(commit)
    edges = arrows(sources)
    rooms = {(room(a), room(b)) for a, b in edges if room(a) != room(b)}
    fan_out = collections.Counter(a for a, _ in edges)
    fixed = {}
    if commit is not None:  # a hash, not a name that moves (HEAD, a branch)
        fixed = {"arrows_between_todays_rooms": arrows_between_todays_rooms(commit, edges, today_rooms)}
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", commit], capture_output=True,
                                text=True, check=True).stdout.strip()
    return {"commit": commit or "working tree", "modules": len(sources),
            "lines": sum(s.count("\n") for s in sources.values()), "arrows": len(edges),
            "rooms": len({room(module_name(p)) for p in sources}), "room_arrows": len(rooms),
            "most_arrows_out": fan_out.most_common(8), **fixed}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--at", nargs="*", default=[None], help="commits (default: the working tree)")
    ap.add_argument("--json", default=None, help="write the counts to this file")
    args = ap.parse_args(argv)
    today_rooms = {room(module_name(p)) for p in sources_at(None)}
    rows = [counts(c, today_rooms) for c in args.at]
    for r in rows:
        print(f"{r['commit']}: {r['modules']} modules, {r['lines']} lines, {r['arrows']} arrows between files; "
              f"{r['rooms']} rooms, {r['room_arrows']} arrows between rooms"
              + (f"; {r['arrows_between_todays_rooms']} between today's rooms" if "arrows_between_todays_rooms" in r
                 else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"definition": __doc__.split("\n\n")[1], "counts": rows}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
