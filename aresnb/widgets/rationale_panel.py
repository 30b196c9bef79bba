"""Look at one problem's rationales side by side: gold, baseline, after RL, Teacher's correction, ARES.

Three layers, top to bottom:
- HTML builders (pure functions of strings -> HTML; unit-tested; also used by ``aresnb.figure3``);
- ``RationaleSources``: reads what stages 01-05 wrote for one split and round (files only);
- ``rationale_panel(...)``: the ipywidgets front end (imports ipywidgets lazily).

Word-level differences come from ``difflib`` over whitespace tokens: words a column adds relative
to its reference are green, words it drops are struck through in red. Each sentence carries its
Teacher score (0.0 wrong .. 1.0 correct) when one is known, else "—".
"""

from __future__ import annotations

import base64
import difflib
import html
import json
import mimetypes
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import pandas as pd

from aresnb.paths import BASELINE_MODEL, round_model
from aresnb.rationale_metrics import dedupe_sentences, normalize_sentence
from aresnb.sentences import split_sentences
from aresnb.stages.data import load_problems
from aresnb.teacher import CorrectionItem, ProblemView, ScoreItem, endpoint, open_teacher
from aresnb.widgets.static import show_panel

# Columns in pipeline order; each is diffed against the one before it by default.
COLUMNS = ("gold", "baseline", "after RL", "Teacher correction", "ARES")
NO_SCORE = "\u2014"

CSS = """
.ares-panel{font-family:system-ui,-apple-system,Segoe UI,sans-serif;font-size:13px;line-height:1.45;color:#1b1b1b}
.ares-problem{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin-bottom:8px;background:#fafafa}
.ares-problem img{height:120px;width:auto;float:right;margin-left:12px;image-rendering:pixelated;border:1px solid #ccc}
.ares-problem .ares-gold-choice{font-weight:600;color:#1a7f37}
.ares-grid{display:grid;gap:8px;align-items:start}
.ares-col{border:1px solid #ddd;border-radius:6px;padding:6px 10px;background:#fff}
.ares-col h4{margin:0 0 4px 0;font-size:13px}
.ares-col .ares-note{color:#777;font-size:11px;margin-bottom:4px}
.ares-sent{padding-bottom:1px}
.ares-score{font-size:10px;font-weight:600;color:#222;border-radius:3px;padding:0 3px;margin-left:2px;vertical-align:super}
ins.ares-ins{background:#c8f5c8;text-decoration:none}
del.ares-del{background:#ffd0d0;color:#8a1f1f}
.ares-missing{color:#999;font-style:italic}
.ares-legend{font-size:11px;color:#555;margin:4px 0}
"""


# ---- HTML builders (pure) ----------------------------------------------------------------------


def score_color(score: Optional[float], lightness: int = 50) -> str:
    """Colour of a sentence score: red (0.0) -> yellow (0.5) -> green (1.0); None if unknown."""
    if score is None:
        return "transparent"
    s = min(1.0, max(0.0, float(score)))
    return f"hsl({round(120 * s)},70%,{lightness}%)"


def _format_score(score: Optional[float]) -> str:
    return NO_SCORE if score is None else f"{float(score):.1f}"


def rationale_html(text: Optional[str], reference: Optional[str] = None,
                   scores: Optional[Sequence[Optional[float]]] = None, show_scores: bool = True) -> str:
    """One rationale as HTML: sentences tinted by score, word differences against ``reference``.

    ``scores`` must align with ``split_sentences(text)``; a list of another length is ignored
    (every sentence then shows "—") because scores of another text must never be shown.
    """
    if text is None:
        return f'<span class="ares-missing">{NO_SCORE}</span>'
    sentences = split_sentences(text)
    if scores is not None and len(scores) != len(sentences):
        scores = None
    tokens = [(m.start(), m.group()) for m in re.finditer(r"\S+", text)]
    # Per new word: its markup; deletions are emitted just before the word that follows them.
    marks = ["" for _ in tokens]
    before: dict[int, list[str]] = {}
    if reference is not None:
        old = reference.split()
        matcher = difflib.SequenceMatcher(a=old, b=[t for _, t in tokens], autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag in ("delete", "replace") and i2 > i1:
                before.setdefault(j1, []).append(f'<del class="ares-del">{html.escape(" ".join(old[i1:i2]))}</del>')
            if tag in ("insert", "replace"):
                for j in range(j1, j2):
                    marks[j] = "ins"
    # Assign each word to the sentence whose span holds its first character.
    def sentence_of(pos: int) -> int:
        for k, s in enumerate(sentences):
            if s.start <= pos < s.end:
                return k
        return len(sentences) - 1 if sentences else -1

    groups: dict[int, list[str]] = {}
    for j, (pos, word) in enumerate(tokens):
        pieces = before.get(j, [])
        w = html.escape(word)
        pieces = pieces + [f'<ins class="ares-ins">{w}</ins>' if marks[j] == "ins" else w]
        groups.setdefault(sentence_of(pos), []).extend(pieces)
    trailing = before.get(len(tokens), [])
    out = []
    for k in sorted(groups):
        body = " ".join(groups[k])
        if k < 0:
            out.append(body)
            continue
        score = scores[k] if scores is not None else None
        if not show_scores:
            out.append(body)
            continue
        # Scores underline the sentence and colour its badge; backgrounds are left to the diff.
        underline = "none" if score is None else f"3px solid {score_color(score)}"
        badge_bg = "#e4e4e4" if score is None else score_color(score, 80)
        out.append(f'<span class="ares-sent" style="border-bottom:{underline}">{body}</span>'
                   f'<span class="ares-score" style="background:{badge_bg}">{_format_score(score)}</span>')
    if trailing:
        out.append(" ".join(trailing))
    return " ".join(out) if out else '<span class="ares-missing">(empty)</span>'


def image_data_url(path: Optional[str]) -> Optional[str]:
    """The image file inlined as a base64 data URL (None when there is no readable file)."""
    if not path or not Path(path).is_file():
        return None
    mime = mimetypes.guess_type(str(path))[0] or "image/png"
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def problem_html(problem: dict, image_url: Optional[str] = None) -> str:
    """Question, context, options (gold one marked) and the image when there is one."""
    letters = [chr(ord("A") + i) for i in range(len(problem.get("choices", [])))]
    options = []
    for i, (letter, choice) in enumerate(zip(letters, problem.get("choices", []))):
        text = f"({letter}) {html.escape(str(choice))}"
        if i == problem.get("answer"):
            text = f'<span class="ares-gold-choice" title="gold answer">{text} \u2713</span>'
        options.append(text)
    context = " ".join(x for x in (problem.get("hint", ""), problem.get("caption", "")) if x) or "N/A"
    img = f'<img src="{image_url}" alt="problem image">' if image_url else ""
    return (
        f'<div class="ares-problem">{img}'
        f'<div><b>{html.escape(str(problem.get("qid", "")))}</b> '
        f'<span class="ares-note">{html.escape(str(problem.get("subject", "")))} · {html.escape(str(problem.get("grade", "")))}</span></div>'
        f"<div><b>Question:</b> {html.escape(str(problem.get('question', '')))}</div>"
        f"<div><b>Context:</b> {html.escape(context)}</div>"
        f"<div><b>Options:</b> {' &nbsp; '.join(options)}</div>"
        '<div style="clear:both"></div></div>'
    )


@dataclass
class Column:
    """One rationale column: its text (None = not available), reference for the diff, scores."""

    name: str
    text: Optional[str]
    reference: Optional[str] = None
    scores: Optional[list] = None
    note: str = ""
    scored: bool = True  # False for text the Teacher never scores (the dataset's gold)


def columns_html(columns: Sequence[Column], show_scores: bool = True) -> str:
    """The columns side by side as a CSS grid."""
    cells = []
    for c in columns:
        note = f'<div class="ares-note">{html.escape(c.note)}</div>' if c.note else ""
        body = rationale_html(c.text, c.reference, c.scores, show_scores=show_scores and c.scored and c.text is not None)
        cells.append(f'<div class="ares-col"><h4>{html.escape(c.name)}</h4>{note}<div>{body}</div></div>')
    return f'<div class="ares-grid" style="grid-template-columns:repeat({max(1, len(columns))},minmax(0,1fr))">{"".join(cells)}</div>'


LEGEND = (
    '<div class="ares-legend"><ins class="ares-ins">added</ins> / <del class="ares-del">removed</del> '
    "words relative to the compared column; underline and badge = the sentence's Teacher score "
    '(<span class="ares-score" style="background:hsl(0,70%,80%)">0.0</span> wrong · '
    '<span class="ares-score" style="background:hsl(60,70%,80%)">0.5</span> neutral · '
    f'<span class="ares-score" style="background:hsl(120,70%,80%)">1.0</span> correct; {NO_SCORE} = not scored).</div>'
)


def comparison_html(problem: dict, columns: Sequence[Column], image_url: Optional[str] = None,
                    show_scores: bool = True) -> str:
    """A problem and its rationale columns, self-styled (drop into a notebook or a page)."""
    return (f'<div class="ares-panel"><style>{CSS}</style>{problem_html(problem, image_url)}'
            f"{LEGEND}{columns_html(columns, show_scores)}</div>")


def page_html(title: str, body: str) -> str:
    """A complete self-contained HTML document."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{CSS}body{{margin:24px;max-width:1400px}}"
        ".ares-example{margin-bottom:28px}</style></head>"
        f'<body class="ares-panel"><h2>{html.escape(title)}</h2>{body}</body></html>\n'
    )


# ---- what the stages wrote ---------------------------------------------------------------------


def _read_jsonl_map(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out[str(row["qid"])] = row["rationale"]
    return out


def latest_round(paths, max_round: int, split: str) -> Optional[int]:
    """The highest round <= max_round whose SFT rationales of ``split`` exist (None if none)."""
    for r in range(max_round, 0, -1):
        if paths.rationales_file(round_model(r), split).exists():
            return r
    return None


@dataclass
class RationaleSources:
    """Every rationale the run has for one split, keyed by column name then qid."""

    split: str
    round_index: int
    problems: dict[str, dict]
    texts: dict[str, dict[str, str]]
    notes: dict[str, str] = field(default_factory=dict)
    scored: dict[tuple[str, str], list] = field(default_factory=dict)  # (qid, normalised text) -> scores

    @classmethod
    def load(cls, paths, round_index: int, split: str, problems: Sequence[dict]) -> "RationaleSources":
        """Read gold, baseline, after-RL, corrections and the latest SFT rationales from ``paths``."""
        texts: dict[str, dict[str, str]] = {c: {} for c in COLUMNS}
        notes: dict[str, str] = {}
        texts["gold"] = {str(p["qid"]): p.get("solution", "") for p in problems}
        texts["baseline"] = _read_jsonl_map(paths.rationales_file(BASELINE_MODEL, split))
        texts["after RL"] = _read_jsonl_map(paths.rl_rationales_file(round_index, split))
        notes["after RL"] = f"round {round_index} PPO policy, greedy"
        corrections = paths.corrections_file(round_index)
        if corrections.exists():
            df = pd.read_parquet(corrections)
            texts["Teacher correction"] = {str(q): t for q, t, s in zip(df["qid"], df["corrected"], df["status"]) if s != "fallback"}
        notes["Teacher correction"] = "train problems only (what SFT learns from)" if split != "train" else f"round {round_index}"
        final = latest_round(paths, 10_000, split)
        if final is not None:
            texts["ARES"] = _read_jsonl_map(paths.rationales_file(round_model(final), split))
            notes["ARES"] = f"after correction SFT, round {final}"
        scored: dict[tuple[str, str], list] = {}
        samples = paths.samples_file(round_index)
        if samples.exists():
            df = pd.read_parquet(samples, columns=["qid", "rationale", "scores"])
            for q, t, s in zip(df["qid"], df["rationale"], df["scores"]):
                if s is not None:
                    scored[(str(q), _score_key(t))] = [float(x) for x in s]
        return cls(split, round_index, {str(p["qid"]): dict(p) for p in problems}, texts, notes, scored)

    def columns(self, qid: str, compare: str = "previous",
                scorer: Optional[Callable[[dict, str], Optional[list]]] = None,
                corrector: Optional[Callable[[dict, str], Optional[str]]] = None) -> list[Column]:
        """The columns of one problem; ``compare`` is 'previous', 'none' or a column name.

        ``scorer`` / ``corrector`` fill in missing Teacher scores / corrections on demand.
        """
        out, previous = [], None
        for name in COLUMNS:
            text = self.texts.get(name, {}).get(qid)
            note = self.notes.get(name, "")
            if text is None and name == "Teacher correction" and corrector is not None:
                rl_text = self.texts["after RL"].get(qid)
                if rl_text is not None:
                    text = corrector(self.problems[qid], rl_text)
                    self.texts[name][qid] = text
                    note = "asked on demand (display only, not trained on)"
            if compare == "previous":
                reference = previous
            elif compare in COLUMNS and compare != name:
                reference = self.texts.get(compare, {}).get(qid)
            else:
                reference = None
            scores = None
            if text is not None and name != "gold":
                scores = self.scored.get((qid, _score_key(text)))
                if scores is None and scorer is not None:
                    scores = scorer(self.problems[qid], text)
            out.append(Column(name, text, reference, scores, note, scored=name != "gold"))
            if text is not None:
                previous = text
        return out

    def qids(self) -> list[str]:
        """Problems with at least one model rationale, in split order."""
        have = set().union(*(set(self.texts[c]) for c in COLUMNS if c != "gold"))
        return [q for q in self.problems if q in have] or list(self.problems)


def _score_key(text: str) -> str:
    return " ".join(normalize_sentence(s.text) for s in split_sentences(text or ""))


# ---- the widget --------------------------------------------------------------------------------


def first_problem_html(sources_by_split: dict[str, RationaleSources], scorer=None, n: int = 2) -> str:
    """The first ``n`` problems of the first split as the panel shows them: its static view."""
    split, src = next(iter(sources_by_split.items()))
    parts = []
    for qid in src.qids()[:n]:
        problem = src.problems[qid]
        parts.append(comparison_html(problem, src.columns(qid, "previous", scorer), image_data_url(problem.get("image"))))
    return "".join(parts) or '<span class="ares-missing">no problems</span>'


def rationale_panel(sources_by_split: dict[str, RationaleSources], scorer=None, corrector=None):
    """An ipywidgets panel: pick split, problem and comparison; see the columns side by side.

    It opens on the first problem of the first split. ``scorer(problem, text) -> list[float] |
    None`` scores unscored rationales on demand; pass one only when scoring is cheap (local
    Teacher or a warm cache), else sentences show "—". ``corrector(problem, rl_text) -> str |
    None`` likewise asks for corrections of val/test.
    """
    import ipywidgets as w  # deferred: the HTML builders above are used without a kernel

    splits = list(sources_by_split)
    split_box = w.Dropdown(options=splits, value=splits[0], description="split")
    problem_box = w.Dropdown(description="problem", layout=w.Layout(width="60%"))
    compare_box = w.Dropdown(options=[("previous column", "previous"), ("none", "none")] + [(c, c) for c in COLUMNS],
                             value="previous", description="diff vs")
    out = w.HTML()

    def problem_options(split: str):
        src = sources_by_split[split]
        return [(f"{q} — {src.problems[q].get('question', '')[:70]}", q) for q in src.qids()]

    def render(*_):
        src = sources_by_split[split_box.value]
        qid = problem_box.value
        if qid is None:
            out.value = '<span class="ares-missing">no problems</span>'
            return
        problem = src.problems[qid]
        out.value = comparison_html(problem, src.columns(qid, compare_box.value, scorer, corrector), image_data_url(problem.get("image")))

    def on_split(*_):
        options = problem_options(split_box.value)
        problem_box.options = options
        # ipywidgets 8 leaves a dropdown built without options at None when options arrive: pick the first
        problem_box.value = options[0][1] if options else None
        render()

    split_box.observe(on_split, names="value")
    problem_box.observe(render, names="value")
    compare_box.observe(render, names="value")
    on_split()
    return w.VBox([w.HBox([split_box, compare_box]), problem_box, out])


def show_rationale_panel(sources_by_split: dict[str, RationaleSources], scorer=None, corrector=None,
                         n_static: int = 2) -> None:
    """Display the panel and, under it, the static view of the first ``n_static`` problems."""
    show_panel(rationale_panel(sources_by_split, scorer, corrector), first_problem_html(sources_by_split, scorer, n_static),
               f"the first {n_static} problems of the {next(iter(sources_by_split))} split")


def teacher_callbacks(cfg, paths, force: bool = False):
    """(scorer, corrector, teacher) for on-demand Teacher calls when they are cheap, else Nones.

    Cheap = the project's local reference Teacher (milliseconds, no cost); a paid endpoint is
    only called when ``force`` is set. Replies go through the Teacher's cache like any other.
    Close the returned teacher when done.
    """
    if not (force or endpoint(cfg).backend.deterministic):
        return None, None, None
    teacher = open_teacher(cfg, paths)

    def scorer(problem: dict, text: str) -> Optional[list]:
        sentences = [s.text for s in split_sentences(text)]
        return teacher.score_sentences([ScoreItem(ProblemView.from_row(problem), sentences)])[0].scores

    def corrector(problem: dict, rl_text: str) -> Optional[str]:
        item = CorrectionItem(ProblemView.from_row(problem), dedupe_sentences(rl_text)[0])
        return teacher.correct([item])[0].text

    return scorer, corrector, teacher


def run_sources(paths, round_index: int, splits: Sequence[str] = ("test", "val", "train")) -> dict[str, RationaleSources]:
    """Every split's :class:`RationaleSources` of a run (the problems read from stage 01's dataset)."""
    data = load_problems(paths)
    return {s: RationaleSources.load(paths, round_index, s, [dict(r) for r in data[s]]) for s in splits}
