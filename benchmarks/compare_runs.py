"""Did a change alter what a run writes? Compare two finished run folders of the same parameters.

    .venv/bin/python benchmarks/compare_runs.py BEFORE_RUN_DIR AFTER_RUN_DIR

It reports
- file names present in one run only (trackers' timestamped event files and the feature cache,
  whose folder is keyed by the vision model's path, are left out: they differ between any two runs);
- every ``summary.json`` whose values differ once timings, the run folder's own path and what the
  shared Teacher cache decides (hits, and the calls and tokens paid instead) are set aside (the
  keys, and each usage block's requests, are compared too);
- every file under ``tables/`` and ``figures/`` whose bytes differ (a PDF compared without its
  ``/CreationDate``, the one thing matplotlib writes that changes between runs).

It exits 1 when anything differs. The refactoring issue #22 compares ``make reproduce`` before
and after a change with it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

VARIES = ("tracking/", "01_data/feature_cache/")
UNSTABLE_KEYS = {"cached", "replies_from_cache", "cache_hits", "fingerprint", "throughput"}
# A Teacher usage block (it has "cache_hits"): what was paid for depends on what the shared reply
# cache already held, not on the run; its requests, model and formats must still agree.
CALL_COUNTS = {"calls", "ok_calls", "retries", "errors", "repairs", "invalid_replies", "prompt_tokens",
               "completion_tokens", "cost_usd", "run_spend_usd"}


def _stable(value, key: str = ""):
    """The value without what differs between two identical runs (timings, cache hits, calls paid)."""
    if isinstance(value, dict):
        skip = UNSTABLE_KEYS | (CALL_COUNTS if "cache_hits" in value else set())
        return {k: _stable(v, k) for k, v in value.items()
                if not (k.endswith("_s") or "time" in k or k in skip)}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _differences(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}: only in {'after' if k in b else 'before'}" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += _differences(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {str(a)[:80]} != {str(b)[:80]}"]


def _summary(run: Path, name: str) -> dict:
    return _stable(json.loads((run / name).read_text().replace(str(run.resolve()), "<run>")))


def _bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return re.sub(rb"/CreationDate \(D:[^)]*\)", b"", data) if path.suffix == ".pdf" else data


def compare(before: Path, after: Path) -> list[str]:
    def names(run: Path) -> set[str]:
        return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and not str(p.relative_to(run)).startswith(VARIES)}

    a, b = names(before), names(after)
    out = [f"only in before: {n}" for n in sorted(a - b)] + [f"only in after: {n}" for n in sorted(b - a)]
    for name in sorted(a & b):
        if name.endswith("summary.json"):
            out += [f"{name}: {d}" for d in _differences(_summary(before, name), _summary(after, name))]
        elif name.startswith(("tables/", "figures/")) and _bytes(before / name) != _bytes(after / name):
            out.append(f"{name}: bytes differ")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__)
        return 2
    before, after = Path(args[0]).resolve(), Path(args[1]).resolve()
    found = compare(before, after)
    print("\n".join(found) if found else f"the same files, summaries, tables and figures: {before} = {after}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
