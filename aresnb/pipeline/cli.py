"""The `aresnb` command: run the pipeline, serve the local Teacher, estimate a run's Teacher cost,
look after the Teacher cache, write a run's report."""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
from pathlib import Path

from aresnb.config import ConfigError, describe, file_values, load_config
from aresnb.paths import EVALUATION, RunPaths
from aresnb.pipeline import preflight
from aresnb.pipeline.runner import NOTEBOOKS_DIR, RunError, RunRefused, parse_stage_selection, run_pipeline


def _stacks_on_sigusr1() -> None:
    """``kill -USR1 <pid>`` prints every thread's stack: where a run that does not stop is waiting.
    Written to a copy of the terminal's stderr, since fd 2 points at a kernel log while a step runs."""
    global _STACKS_OUT
    if _STACKS_OUT is None and hasattr(signal, "SIGUSR1"):
        _STACKS_OUT = os.fdopen(os.dup(2), "w")
        faulthandler.register(signal.SIGUSR1, file=_STACKS_OUT, all_threads=True)


_STACKS_OUT = None


def _cmd_run(args: argparse.Namespace) -> int:
    _stacks_on_sigusr1()
    try:
        cfg = load_config(args.params, args.set)  # validation happens before any work starts
        stages = parse_stage_selection(args.stages)
    except (ConfigError, RunError) as e:
        print(f"aresnb run: {e}", file=sys.stderr)
        return 2
    if args.verbose and args.quiet:
        print("aresnb run: --verbose and --quiet exclude each other", file=sys.stderr)
        return 2
    output = "verbose" if args.verbose else "quiet" if args.quiet else "progress"
    if output == "verbose":
        # papermill streams each cell's output (and its cell markers) through its logger.
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("    %(message)s"))
        pm_logger = logging.getLogger("papermill")
        pm_logger.addHandler(handler)
        pm_logger.setLevel(logging.INFO)
        pm_logger.propagate = False
    try:
        manifest = run_pipeline(cfg, stages=stages, force=args.force, output=output)
    except RunRefused as e:
        print(f"aresnb run: {e}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"\naresnb run: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        during = f" during {e}" if str(e) else ""
        print(f"\naresnb run: interrupted{during}; run the same command again to resume", file=sys.stderr)
        return 130
    if not args.quiet and manifest["stages"].get(EVALUATION, {}).get("status") == "done":
        _print_outcome(RunPaths(cfg).run_dir)
    return 0


def _print_outcome(run_dir: Path, refresh_figures: bool = False) -> None:
    """The run's headline figures and where to read more (the report is written first; with
    ``refresh_figures`` the figures are redrawn from the run's files before)."""
    from aresnb.present.report import headline_lines, write_report  # deferred: pandas, matplotlib

    report = write_report(run_dir, refresh_figures=refresh_figures)
    for line in headline_lines(run_dir):
        print(f"[aresnb]   {line}")
    for what, where in (("report ", report), ("figures", run_dir / "figures"), ("tables ", run_dir / "tables")):
        print(f"[aresnb] {what} {where.resolve().as_uri()}{'/' if where.is_dir() else ''}")


def _cmd_serve_teacher(args: argparse.Namespace) -> int:
    from aresnb.teacher.server import main as serve_main  # deferred: aiohttp, only for this command

    return serve_main(args.server_args)


def _cmd_report(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "manifest.json").exists():
        print(f"aresnb report: {run_dir} is not a run directory (no manifest.json)", file=sys.stderr)
        return 2
    _print_outcome(run_dir, refresh_figures=True)
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    from aresnb.present.results_table import render, update_readme  # deferred: only for this command

    run_dir = Path(args.run_dir)
    if not (run_dir / "manifest.json").exists():
        print(f"aresnb results: {run_dir} is not a run directory (no manifest.json)", file=sys.stderr)
        return 2
    text = render(run_dir, args.effect, args.bench, args.ablation)
    if args.readme:
        print(f"updated {update_readme(args.readme, text)}")
    else:
        print(text)
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    if not args.params:
        for key, default, doc in describe():
            print(f"{key:<36} {default!r:<28} {doc}")
        return 0
    try:
        cfg = load_config(args.params, args.set)
        stages = parse_stage_selection(args.stages)
    except (ConfigError, RunError) as e:
        print(f"aresnb params: {e}", file=sys.stderr)
        return 2
    print(f"{args.params}: valid (hash {cfg.hash()}); what it sets (every other parameter keeps its default):")
    for key, value, is_default in file_values(cfg, args.params, args.set):
        shown = value if isinstance(value, str) else json.dumps(value)
        print(f"  {key}: {shown}" + (" (the default)" if is_default else ""))
    problems = preflight.problems(cfg, stages, NOTEBOOKS_DIR)
    if problems:
        which = f"stages {args.stages}" if args.stages else "a full run"
        print(f"{args.params}: not ready for {which} here:\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 1
    return 0


def _cmd_estimate(args: argparse.Namespace) -> int:
    from aresnb.pipeline.estimate import estimate, format_table

    try:
        cfg = load_config(args.params, args.set)
    except ConfigError as e:
        print(f"aresnb estimate: {e}", file=sys.stderr)
        return 2
    print(format_table(estimate(cfg)))
    return 0


def _cmd_teacher_cache(args: argparse.Namespace) -> int:
    from aresnb.teacher.cache_cli import main as cache_main

    return cache_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aresnb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the notebook pipeline on a parameter file")
    run.add_argument("params", help="YAML parameter file, e.g. params/smoke.yaml")
    run.add_argument("--stages", help="stages to run, e.g. 01,03-05 (default: all)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a parameter with a dotted key, e.g. --set ppo.lr=1e-5 (repeatable)")
    run.add_argument("--force", action="store_true", help="re-run stages that completed before")
    run.add_argument("--verbose", action="store_true",
                     help="stream every cell's output (papermill's log) instead of the stages' progress lines")
    run.add_argument("--quiet", action="store_true", help="print the [aresnb] step lines only")
    run.set_defaults(func=_cmd_run)

    serve = sub.add_parser("serve-teacher", help="serve the OpenAI-compatible local Teacher on 127.0.0.1",
                           add_help=False)
    serve.add_argument("server_args", nargs=argparse.REMAINDER,
                       help="options of the server (aresnb serve-teacher --help)")
    serve.set_defaults(func=_cmd_serve_teacher)

    report = sub.add_parser("report", help="write one self-contained HTML report of a finished run")
    report.add_argument("run_dir", help="outputs/<run>")
    report.set_defaults(func=_cmd_report)

    results = sub.add_parser("results", help="the README's result tables, written from a run's summaries")
    results.add_argument("run_dir", help="outputs/<run>")
    results.add_argument("--effect", default=None, help="benchmarks/results/ares_effect.json (the effect across seeds)")
    results.add_argument("--ablation", default=None,
                         help="benchmarks/results/ares_ablation.json (the ablation arms across seeds)")
    results.add_argument("--bench", default=None, help="benchmarks/results (the PPO throughput ratios)")
    results.add_argument("--readme", default=None, help="replace the results section of this README instead of printing")
    results.set_defaults(func=_cmd_results)

    est = sub.add_parser("estimate", help="Teacher and judge requests, tokens, USD and wall time per stage, before any call")
    est.add_argument("params", help="YAML parameter file, e.g. params/scienceqa_base.yaml")
    est.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    est.set_defaults(func=_cmd_estimate)

    cache = sub.add_parser("teacher-cache", help="inspect, export or clean a Teacher reply cache")
    cache.add_argument("action", choices=["stats", "export", "purge-invalid"],
                       help="stats: counts and spend; export: the valid answers as a JSONL cassette; "
                            "purge-invalid: move answers that fail validation out of the answer table")
    cache.add_argument("--path", default=None, help="the cache file (default: outputs/teacher_cache.sqlite, "
                                                    "or teacher.cache_path of --params)")
    cache.add_argument("--params", default=None, help="a parameter file whose teacher.cache_path to use")
    cache.add_argument("--out", default=None, help="export: the cassette file (default: <cache>.cassette.jsonl)")
    cache.add_argument("--attempts", action="store_true", help="export: also write the attempt log "
                                                               "(<out>.attempts.jsonl), invalid replies included")
    cache.set_defaults(func=_cmd_teacher_cache)

    params = sub.add_parser("params", help="print every parameter with its default and doc, or validate a file "
                                           "and check it can run here (API keys, paths); exit 2 invalid, 1 not ready")
    params.add_argument("params", nargs="?", help="a YAML file to validate")
    params.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    params.add_argument("--stages", help="check the file for these stages only, e.g. 01-02 (default: all)")
    params.set_defaults(func=_cmd_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve-teacher"]:  # the server parses its own options (and its own --help)
        return _cmd_serve_teacher(argparse.Namespace(server_args=argv[1:]))
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
