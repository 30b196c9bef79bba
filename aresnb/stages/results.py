"""A run's results as people look at them: :func:`read_run` reads the run's files once, into a
frozen :class:`RunResults`; the figures (:mod:`aresnb.present.plots`) and the report (:mod:`aresnb.present.report`)
are functions of it and know no run folder. The rationales of a round, bigger and wanted only by
stage 05's panel and the Figure-3 page (:mod:`aresnb.present.widgets.rationale_panel`, :mod:`aresnb.present.figure3`),
are read apart, on demand, by :func:`read_rationales` into frozen :class:`RationaleSources`; what
each model did on each problem (the benchmarks' per-problem figures) by :func:`read_problem_outcomes`
into frozen :class:`ProblemOutcomes`.

What is not there yet (a stage that has not run) is simply absent: ``summary`` gives ``{}``, the
mappings lack the key, and a figure or a table without data is left out. A JSON file that cannot
be parsed reads as absent too, and a training log's half-written last line is dropped: a report of
a half-written run still renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import pandas as pd

from aresnb.io import read_json, read_jsonl
from aresnb.paths import (ARES_MODEL, ARM_STEPS, BASELINE, BASELINE_MODEL, CORRECTION_SFT, EVALUATION, PPO, ROUND_STAGES,
                          STAGES, RunPaths, round_model)
from aresnb.text.rationale_metrics import normalize_sentence
from aresnb.text.sentences import split_sentences

StepKey = tuple[str, "int | None"]  # (stage, round index; None: a stage without rounds, or the latest round's mirror)


@dataclass(frozen=True)
class RunOutputs:
    """Where what is drawn from the results goes (read_run takes them from paths.RunPaths; the
    figures and the report only write there)."""

    run_dir: Path
    figures_dir: Path
    report_file: Path


@dataclass(frozen=True)
class RunResults:
    rounds: int
    outputs: RunOutputs
    manifest: Mapping[str, Any] | None  # None: no (readable) manifest.json
    summaries: Mapping[StepKey, Mapping[str, Any]]
    arm_summaries: Mapping[tuple[str, str], Mapping[str, Any]]  # (stage, arm) -> an arm's own step's summary
    tables: Mapping[str, pd.DataFrame]  # stage 07's tables by name (its summary's "tables")
    table_files: Mapping[str, str]  # the same names -> their CSV's file name under tables/
    metrics: Mapping[StepKey, tuple[Mapping[str, Any], ...]]  # the trainers' rows, one per optimizer step
    ppo_eval: Mapping[tuple[int, str], tuple[Mapping[str, Any], ...]]  # (round, "before"|"after") -> scored val rows
    samples: Mapping[int, pd.DataFrame]  # round -> stage 03's samples (columns scores, dropped)
    judgments: tuple[Mapping[str, Any], ...]  # the judge's verdicts of ARES against the baseline
    figure_files: Mapping[str, Path]  # figure name -> its PNG, for the figures drawn so far
    figure3_file: Path | None  # the Figure-3 page (HTML), once stage 07 wrote it
    notebook_pages: Mapping[str, str]  # executed notebook's file name -> its HTML export's file name

    def summary(self, stage: str, round_index: int | None = None, arm: str | None = None) -> Mapping[str, Any]:
        """A stage's summary ({} when it has not run); a round stage without a round: the latest round's;
        with ``arm``: the ablation arm's own run of the stage (``paths.ARM_STEPS``)."""
        if arm is not None:
            return self.arm_summaries.get((stage, arm), {})
        return self.summaries.get((stage, round_index), {})


def _json_or_none(path: Path) -> Any:
    try:
        return read_json(path) if path.exists() else None
    except (OSError, ValueError):
        return None


def _evaluation_tables(paths: RunPaths, summary07: Mapping[str, Any]) -> dict[str, Path]:
    """The CSVs of the tables stage 07 lists, in this run folder (the summary's paths may be another machine's)."""
    out = {}
    for name, files in (summary07.get("tables") or {}).items():
        if isinstance(files, Mapping) and files.get("csv"):
            if (csv := paths.tables_dir / Path(files["csv"]).name).exists():
                out[name] = csv
    return out


def _rounds(paths: RunPaths, manifest: Mapping[str, Any] | None) -> int:
    return int((manifest or {}).get("rounds") or max(paths.rounds_present(), default=1))


def read_run(paths: RunPaths, rounds: int | None = None) -> RunResults:
    """What the run at ``paths`` has written so far, read now; ``rounds``: its ARES rounds (None:
    the manifest's, else the round folders present)."""
    manifest = _json_or_none(paths.manifest)
    rounds = _rounds(paths, manifest) if rounds is None else rounds
    summaries: dict[StepKey, Mapping[str, Any]] = {}
    for stage in STAGES:
        for i in [None, *range(1, rounds + 1)] if stage in ROUND_STAGES else [None]:
            if (found := _json_or_none(paths.summary_file(stage, i))) is not None:
                summaries[(stage, i)] = MappingProxyType(found)
    arm_summaries = {(stage, arm): MappingProxyType(found) for stage, arm in ARM_STEPS
                     if (found := _json_or_none(paths.summary_file(stage, 1, arm))) is not None}
    metrics: dict[StepKey, tuple] = {}
    for key in [(BASELINE, None), *[(s, i) for s in (PPO, CORRECTION_SFT) for i in range(1, rounds + 1)]]:
        if (file := paths.metrics_file(*key)).exists():
            metrics[key] = tuple(read_jsonl(file, tolerate_partial_last_line=True))  # a killed trainer's last line
    ppo_eval = {(i, when): tuple(found.get("rows", []))
                for i in range(1, rounds + 1) for when in ("before", "after")
                if (found := _json_or_none(paths.ppo_eval_file(i, when))) is not None}
    samples = {i: pd.read_parquet(paths.samples_file(i), columns=["scores", "dropped"])
               for i in range(1, rounds + 1) if paths.samples_file(i).exists()}
    csvs = _evaluation_tables(paths, summaries.get((EVALUATION, None), {}))
    notebooks = [Path(m.get("notebook", label)).name for label, m in ((manifest or {}).get("stages") or {}).items()]
    return RunResults(
        rounds=rounds, outputs=RunOutputs(paths.run_dir, paths.figures_dir, paths.report_file),
        manifest=None if manifest is None else MappingProxyType(manifest),
        summaries=MappingProxyType(summaries), arm_summaries=MappingProxyType(arm_summaries),
        tables=MappingProxyType({name: pd.read_csv(csv) for name, csv in csvs.items()}),
        table_files=MappingProxyType({name: csv.name for name, csv in csvs.items()}),
        metrics=MappingProxyType(metrics), ppo_eval=MappingProxyType(ppo_eval), samples=MappingProxyType(samples),
        judgments=tuple(read_jsonl(paths.judgments_file)) if paths.judgments_file.exists() else (),
        figure_files=MappingProxyType({p.stem: p for p in sorted(paths.figures_dir.glob("*.png"))}),
        figure3_file=paths.figure3_file if paths.figure3_file.exists() else None,
        notebook_pages=MappingProxyType({name: paths.executed_notebook_html(name).name for name in notebooks
                                         if paths.executed_notebook_html(name).exists()}))


def read_run_dir(run_dir: str | Path, rounds: int | None = None) -> RunResults:
    """:func:`read_run` of the run folder ``run_dir`` (the CLI's and the report's way in)."""
    return read_run(RunPaths.from_dir(run_dir), rounds)


# ---- the rationales of a round, side by side (stage 05's panel, the Figure-3 page) ---------------

# The rationale columns in pipeline order (each is diffed against the one before it by default).
RATIONALE_COLUMNS = ("gold", "baseline", "after RL", "Teacher correction", "ARES")
SPLITS = ("test", "val", "train")


def score_key(text: str | None) -> str:
    """A rationale as its stored Teacher scores are looked up: normalised sentences (whitespace and
    case do not matter)."""
    return " ".join(normalize_sentence(s.text) for s in split_sentences(text or ""))


@dataclass(frozen=True)
class RationaleSources:
    """Every rationale a run has for one split and round: per column of :data:`RATIONALE_COLUMNS`,
    ``{qid: text}``; the Teacher's sentence scores the run stored (stage 03's samples of the round)."""

    split: str
    round_index: int
    run_name: str  # the run folder's name (the Figure-3 page's title)
    problems: Mapping[str, Mapping[str, Any]]  # qid -> the problem's row, in split order
    texts: Mapping[str, Mapping[str, str]]  # column -> qid -> rationale (a column without any: {})
    notes: Mapping[str, str]  # column -> what it is, in words
    scored: Mapping[tuple[str, str], tuple[float, ...]]  # (qid, score_key(text)) -> its sentences' scores

    def stored_scores(self, qid: str, text: str | None) -> list[float] | None:
        """The Teacher's stored scores of ``text`` (one per sentence) as an answer to ``qid``; None: not scored."""
        found = self.scored.get((qid, score_key(text))) if text is not None else None
        return None if found is None else list(found)

    def qids(self) -> list[str]:
        """Problems with at least one model rationale, in split order (all of them when none has one)."""
        have = set().union(*(set(self.texts.get(c, {})) for c in RATIONALE_COLUMNS if c != "gold"))
        return [q for q in self.problems if q in have] or list(self.problems)


def rationale_file(path: Path) -> dict[str, str]:
    """{qid: rationale} of a rationales JSONL file (stages 02, 05); names the file and line on bad input."""
    if not path.exists():
        raise FileNotFoundError(f"rationales file not found: {path} (has the stage that writes it run?)")
    out = {}
    for i, row in enumerate(read_jsonl(path), 1):
        if "qid" not in row or "rationale" not in row:
            raise ValueError(f"{path}: line {i} lacks 'qid' or 'rationale': {str(row)[:120]}")
        out[str(row["qid"])] = str(row["rationale"] or "")
    return out


def _rationale_map(path: Path) -> dict[str, str]:
    """A column's rationales: none yet when its stage has not written them."""
    return rationale_file(path) if path.exists() else {}


def _latest_sft_round(paths: RunPaths, split: str) -> int | None:
    """The highest round whose corrected SFT model wrote rationales of ``split`` (None: none yet)."""
    found = [i for i in paths.rounds_present() if paths.rationales_file(round_model(i), split).exists()]
    return max(found, default=None)


def _frozen(mapping: Mapping[str, str], qids: Mapping[str, Any]) -> Mapping[str, str]:
    return MappingProxyType({q: t for q, t in mapping.items() if q in qids})


def read_rationales(paths: RunPaths, round_index: int, splits: tuple[str, ...] = SPLITS,
                    problems: Mapping[str, list[Mapping[str, Any]]] | None = None) -> Mapping[str, RationaleSources]:
    """Each split's :class:`RationaleSources` of round ``round_index``, read now, each file once:
    gold (the dataset's solutions), baseline, after RL (the round's PPO policy), the Teacher's
    corrections (train only), ARES (the latest round's corrected SFT model) and stage 03's scores.
    ``problems``: ``{split: rows}``; None reads stage 01's dataset."""
    if problems is None:
        from aresnb.stages.driver import load_problems  # deferred: datasets, only when the panel asks

        dataset = load_problems(paths)
        problems = {s: [dict(r) for r in dataset[s]] for s in splits}
    corrections: dict[str, str] = {}
    if (file := paths.corrections_file(round_index)).exists():
        df = pd.read_parquet(file, columns=["qid", "corrected", "status"])
        corrections = {str(q): t for q, t, s in zip(df["qid"], df["corrected"], df["status"]) if s != "fallback"}
    scored: dict[tuple[str, str], tuple[float, ...]] = {}
    if (file := paths.samples_file(round_index)).exists():
        df = pd.read_parquet(file, columns=["qid", "rationale", "scores"])
        for q, t, s in zip(df["qid"], df["rationale"], df["scores"]):
            if s is not None:
                scored[(str(q), score_key(t))] = tuple(float(x) for x in s)
    frozen_scores = MappingProxyType(scored)
    out = {}
    for split in splits:
        rows = {str(p["qid"]): MappingProxyType(dict(p)) for p in problems[split]}
        final = _latest_sft_round(paths, split)
        texts = {
            "gold": {q: p.get("solution", "") for q, p in rows.items()},
            "baseline": _rationale_map(paths.rationales_file(BASELINE_MODEL, split)),
            "after RL": _rationale_map(paths.rl_rationales_file(round_index, split)),
            "Teacher correction": corrections,
            "ARES": {} if final is None else _rationale_map(paths.rationales_file(round_model(final), split)),
        }
        notes = {"after RL": f"round {round_index} PPO policy, greedy",
                 "Teacher correction": "train problems only (what SFT learns from)" if split != "train"
                 else f"round {round_index}"}
        if final is not None:
            notes["ARES"] = f"after correction SFT, round {final}"
        out[split] = RationaleSources(
            split, round_index, paths.run_dir.name, MappingProxyType(rows),
            MappingProxyType({c: _frozen(texts[c], rows) for c in RATIONALE_COLUMNS}), MappingProxyType(notes),
            frozen_scores)
    return MappingProxyType(out)


# ---- per problem: what each model did on each test problem (the ablation and agreement benchmarks) --


@dataclass(frozen=True)
class ProblemOutcomes:
    """Per problem, what a run's stages made of each model, as stage 06 and 07 name the models
    (``baseline``, ``round_<i>``, ``ares``, the arms): its test rationales, each answer head's
    right-or-wrong per test prediction, each judged comparison's verdict rows, and stage 03's samples
    with every column. What the run has not written is absent."""

    rounds: int
    problems: Mapping[str, tuple[Mapping[str, Any], ...]]  # split -> stage 01's rows, in split order
    rationales: Mapping[str, Mapping[str, str]]  # model -> qid -> its test rationale
    correct: Mapping[tuple[str, str], tuple[bool, ...]]  # (model, answer format) -> per test prediction
    judgments: Mapping[tuple[str, str], tuple[Mapping[str, Any], ...]]  # (subject, reference) -> verdicts
    samples: Mapping[int, pd.DataFrame]  # round -> stage 03's samples.parquet


def read_problem_outcomes(paths: RunPaths, splits: tuple[str, ...] = ("test",)) -> ProblemOutcomes:
    """The run's :class:`ProblemOutcomes`, read now; ``splits``: the dataset splits whose rows to read."""
    from aresnb.stages.driver import load_problems  # deferred: datasets, only when per-problem rows are asked

    rounds = _rounds(paths, _json_or_none(paths.manifest))
    dataset = load_problems(paths)
    correct = {head: tuple(bool(r["correct"]) for r in read_jsonl(f)) for head, f in paths.predictions_files().items()}
    judgments = {pair: tuple(MappingProxyType(r) for r in read_jsonl(f))
                 for pair, f in paths.comparison_judgments_files().items()}
    models = dict.fromkeys([BASELINE_MODEL, *(m for m, _ in correct), *(m for pair in judgments for m in pair)])
    rationales = {}
    for model in models:  # ARES's rationales are its last round's model's
        file = paths.rationales_file(round_model(rounds) if model == ARES_MODEL else model, "test")
        if file.exists():
            rationales[model] = MappingProxyType(rationale_file(file))
    return ProblemOutcomes(
        rounds=rounds,
        problems=MappingProxyType({s: tuple(MappingProxyType(dict(r)) for r in dataset[s]) for s in splits}),
        rationales=MappingProxyType(rationales), correct=MappingProxyType(correct),
        judgments=MappingProxyType(judgments),
        samples=MappingProxyType({i: pd.read_parquet(paths.samples_file(i)) for i in range(1, rounds + 1)
                                  if paths.samples_file(i).exists()}))


def read_problem_outcomes_dir(run_dir: str | Path, splits: tuple[str, ...] = ("test",)) -> ProblemOutcomes:
    """:func:`read_problem_outcomes` of the run folder ``run_dir`` (the benchmarks' way in)."""
    return read_problem_outcomes(RunPaths.from_dir(run_dir), splits)
