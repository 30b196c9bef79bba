"""``aresnb estimate PARAMS``: what a run will ask of its Teacher and judge, before any call.

Per stage and round: requests, prompt and completion tokens, images, USD at the configured prices
and wall time at the configured concurrency and an assumed latency (``teacher.assumed_latency_s``),
never faster than the configured rate limits allow. Nothing is sent anywhere.

How the numbers are made:
- requests: stage 03 scores k samples of each rollout problem (``rollout.max_problems`` or every
  train problem); stage 04 scores greedy rationales of the PPO evaluation problems twice (before
  and after PPO); stage 05 asks one correction per correction problem; stage 07 asks the judge
  twice per judged test problem (both orders). Stages 03-05 repeat every ARES round. Repair
  requests (one per invalid reply) are not included: add your endpoint's invalid-reply share.
- tokens: each request's real prompt, built with the project's prompt templates from each
  problem of the data (the synthetic generator, a local ScienceQA or A-OKVQA folder); the
  rationale a stage sends is stood in for by the problem's gold solution, cut to the stage's
  generation limit. Text counts ~4 characters a token (``aresnb.teacher.limits.approx_tokens``:
  no provider tokenizer is at hand offline); each image counts ``teacher.image_tokens``
  (``evaluation.judge.image_tokens`` for the judge). Completions: the reply JSON each request
  asks for (scores echo every sentence key; a correction echoes the rationale; a verdict is a
  few tokens).
- when the data cannot be read here (a hub id, a folder that is not there), the per-problem
  lengths fall back to the dataset record's ``fallback`` (ScienceQA: means measured on the 150 real problems of
  ``../shared/data/scienceqa-mini``; A-OKVQA: rough guesses, no sample at hand), with the papers'
  split sizes.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aresnb.config import Config
from aresnb.data import registry as dataset_registry
from aresnb.data.registry import Dataset, FallbackLengths, Folders
from aresnb.teacher import prompts
from aresnb.teacher.endpoints import Endpoint, endpoint
from aresnb.teacher.limits import approx_tokens, cost_usd, message_tokens
from aresnb.teacher.problem import ProblemView
from aresnb.text.sentences import sentence_texts

IMAGE_PLACEHOLDER = "data:image/png;base64,"  # stands for an image: counted at image_tokens


@dataclass
class Row:
    stage: str
    round: int | None
    role: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    images: int
    cost_usd: float
    wall_s: float


# ---- the data -----------------------------------------------------------------------------


def read_rows(cfg: Config, record: Dataset) -> tuple[dict[str, list[dict]], str]:
    """({split: problem rows}, where they came from) of ``record``, the data section's dataset; {}
    when the data is not readable here."""
    d = cfg.data
    if not (record.generated or (d.path and Path(d.path).is_dir())):
        return {}, (f"fallback lengths ({d.source} data at {d.path or d.hub_id} not readable here: "
                    "per-problem lengths of its dataset record's fallback, else ScienceQA's)")
    try:
        with tempfile.TemporaryDirectory(prefix="aresnb-estimate-") as tmp:
            folders = Folders(generated=Path(tmp) / "generated", downloads=Path(tmp) / "downloads")
            rows, _, _ = record.read(dataclasses.replace(d, missing_image="zeros"), cfg.run.seed, folders)
    except (OSError, ValueError) as e:  # a DataError is a ValueError
        return {}, f"fallback lengths ({d.source} data not readable: {e})"
    if record.generated:
        return rows, f"the {d.source} generator (seed {cfg.run.seed})"
    return rows, f"{d.source} folder {d.path}"


def fallback_rows(lengths: FallbackLengths) -> dict[str, list[dict]]:
    """One stand-in problem per split, of the record's fallback lengths, repeated to the split's size."""
    rows = {}
    for split, n in lengths.splits.items():
        with_image = round(n * lengths.image_share)
        base = dict(qid="fallback", question="x" * lengths.question, hint="x" * lengths.hint,
                    choices=["x" * c for c in lengths.choices], answer=0,
                    solution=" ".join(["x" * 54 + "."] * max(1, lengths.solution // 55)))
        rows[split] = [dict(base, has_image=i < with_image) for i in range(n)]
    return rows


def _subsample_size(n: int, limit: int | None) -> int:
    return n if limit is None else min(n, limit)


# ---- requests per stage -------------------------------------------------------------------


def _view(row: dict) -> ProblemView:
    return ProblemView(qid=str(row.get("qid", "?")), question=str(row["question"]),
                       choices=tuple(str(c) for c in row["choices"]), answer=int(row["answer"]),
                       hint=str(row.get("hint") or ""), caption=str(row.get("caption") or ""))


def _rationale(row: dict, max_new_tokens: int) -> str:
    return str(row.get("solution") or "")[: 4 * max_new_tokens]


def _tokens(kind: str, row: dict, vision: bool, image_tokens: int, max_new_tokens: int,
            style: str = "aresnb") -> tuple[int, int, int]:
    """(prompt tokens, completion tokens, images) of one request of ``kind`` about ``row``, worded in
    ``style`` (teacher.prompt_style; the judge's request has one wording)."""
    view, rationale = _view(row), _rationale(row, max_new_tokens)
    sent = bool(row.get("has_image")) and not row.get("features_zeroed")  # a missing image is not sent
    image = IMAGE_PLACEHOLDER if vision and sent else None
    if kind == "score":
        sentences = sentence_texts(rationale) or [rationale or "."]
        messages = prompts.score_messages(view, sentences, image, style)
        reply = json.dumps({k: 0.5 for k in prompts.sentences_object(sentences)}, ensure_ascii=False)
    elif kind == "correct":
        messages = prompts.correct_messages(view, rationale, image, style)
        reply = json.dumps({"corrected_rationale": rationale}, ensure_ascii=False)
    else:
        messages = prompts.judge_messages(view, rationale, rationale, image)
        reply = json.dumps({"better": "A"})
    return message_tokens(messages, image_tokens), approx_tokens(reply), int(image is not None)


def _row(stage: str, round_index: int | None, role: str, t: Endpoint, kind: str, rows: list[dict], n_problems: int,
         asks_per_problem: int, max_new_tokens: int) -> Row:
    """Requests about the first ``n_problems`` rows (their mean lengths scaled to n_problems)."""
    per = [_tokens(kind, r, t.vision, t.image_tokens, max_new_tokens, t.prompt_style) for r in rows] or [(0, 0, 0)]
    mean = [statistics.fmean(x[i] for x in per) for i in range(3)]
    n = n_problems * asks_per_problem
    prompt, completion, images = round(mean[0] * n), round(mean[1] * n), round(mean[2] * n)
    usd = cost_usd(prompt, completion, t.price_input_per_mtok, t.price_output_per_mtok)
    wall = n * t.assumed_latency_s / t.concurrency
    if t.max_requests_per_minute:
        wall = max(wall, 60.0 * n / t.max_requests_per_minute)
    if t.max_tokens_per_minute:
        wall = max(wall, 60.0 * (prompt + completion) / t.max_tokens_per_minute)
    return Row(stage, round_index, role, t.model, n, prompt, completion, images, usd, wall)


def estimate(cfg: Config) -> dict:
    """{"data": where the lengths came from, "rows": [Row], "total": Row, "max_cost_usd": ...}."""
    record = dataset_registry.dataset(cfg.data)
    rows_by_split, where = read_rows(cfg, record)
    if not rows_by_split:
        # a dataset without fallback lengths is estimated with ScienceQA's
        lengths = record.fallback or dataset_registry.find("scienceqa").fallback
        rows_by_split = fallback_rows(lengths)
    if cfg.data.max_per_split is not None:
        rows_by_split = {s: r[: cfg.data.max_per_split] for s, r in rows_by_split.items()}
    train, val, test = (rows_by_split.get(s, []) for s in ("train", "val", "test"))
    teacher, judge = endpoint(cfg, "teacher"), endpoint(cfg, "judge")
    out: list[Row] = []
    for r in range(1, cfg.ares.rounds + 1):
        out.append(_row("03_teacher_scores", r, "teacher", teacher, "score", train,
                        _subsample_size(len(train), cfg.rollout.max_problems), cfg.rollout.samples_per_problem,
                        cfg.rollout.max_new_tokens))
        out.append(_row("04_ppo", r, "teacher", teacher, "score", val,
                        _subsample_size(len(val), cfg.ppo.eval_problems), 2, cfg.ppo.eval_max_new_tokens))
        out.append(_row("05_correction_sft", r, "teacher", teacher, "correct", train,
                        _subsample_size(len(train), cfg.correction.max_problems), 1, cfg.correction.max_new_tokens))
    out.append(_row("07_evaluation", None, "judge", judge, "judge", test,
                    _subsample_size(len(test), cfg.evaluation.max_judge_problems), 2, cfg.baseline.gen_max_new_tokens))
    total = Row("total", None, "", "", *(sum(getattr(x, f) for x in out) for f in
                                           ("requests", "prompt_tokens", "completion_tokens", "images", "cost_usd",
                                            "wall_s")))
    return {"data": where, "rows": out, "total": total, "max_cost_usd": cfg.teacher.max_cost_usd,
            "assumed_latency_s": {"teacher": teacher.assumed_latency_s, "judge": judge.assumed_latency_s}}


def format_table(result: dict) -> str:
    head = ("stage", "round", "role", "model", "requests", "prompt tok", "completion tok", "images", "USD", "wall")
    lines = [[r.stage, "-" if r.round is None else str(r.round), r.role, r.model, f"{r.requests:,}",
              f"{r.prompt_tokens:,}", f"{r.completion_tokens:,}", f"{r.images:,}", f"{r.cost_usd:.2f}",
              _duration(r.wall_s)] for r in [*result["rows"], result["total"]]]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    rule = "  ".join("-" * w for w in widths)
    text = [f"data lengths from {result['data']}", fmt(head), rule, *map(fmt, lines[:-1]), rule, fmt(lines[-1])]
    limit = result["max_cost_usd"]
    total = result["total"].cost_usd
    if limit is None:
        text.append("teacher.max_cost_usd: none")
    else:
        verdict = "the estimate is within it" if total <= limit else f"the estimate EXCEEDS it by {total - limit:.2f}"
        text.append(f"teacher.max_cost_usd: {limit:.2f} ({verdict}: the run stops before passing it)")
    lat = result["assumed_latency_s"]
    text.append(f"assumptions: ~4 characters a token; {lat['teacher']} s a Teacher request, {lat['judge']} s a judge "
                "request; repairs of invalid replies not included; wall time at the configured concurrency and rate "
                "limits, stages one after another")
    return "\n".join(text)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
