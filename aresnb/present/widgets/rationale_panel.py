"""Look at one problem's rationales side by side: gold, baseline, after RL, Teacher's correction, ARES.

Three layers, top to bottom:
- HTML builders (pure functions of strings -> HTML; unit-tested; also used by ``aresnb.present.figure3``);
- ``problem_columns(...)``: one problem's columns, from the rationales stages 01-05 wrote for a split and
  round, read by :func:`aresnb.stages.results.read_rationales` (this module reads no run file);
- ``rationale_panel(...)``: the ipywidgets front end (imports ipywidgets lazily). It calls no Teacher
  itself: scores and corrections the run lacks come from the callables it is handed (stage 05's
  ``teacher_callbacks``).

Word-level differences come from ``difflib`` over whitespace tokens: words a column adds relative
to its reference are green, words it drops are struck through in red. Each sentence carries its
Teacher score (0.0 wrong .. 1.0 correct) when one is known, else "—".
"""

from __future__ import annotations

import base64
import difflib
import html
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from aresnb.present.widgets.static import show_panel
from aresnb.stages.results import RATIONALE_COLUMNS as COLUMNS  # in pipeline order; each diffed against the one before
from aresnb.stages.results import RationaleSources
from aresnb.text.sentences import split_sentences

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


# ---- the columns of one problem (from what the run wrote: aresnb.stages.results) -----------------

# The Teacher's corrections asked on demand, kept by the panel that asked: (split, qid) -> text.
Asked = dict[tuple[str, str], Optional[str]]


def problem_columns(sources: RationaleSources, qid: str, compare: str = "previous",
                    scorer: Optional[Callable[[Mapping, str], Optional[list]]] = None,
                    corrector: Optional[Callable[[Mapping, str], Optional[str]]] = None,
                    asked: Optional[Asked] = None) -> list[Column]:
    """The columns of one problem; ``compare`` is 'previous', 'none' or a column name.

    ``scorer(problem, text)`` fills in Teacher scores the run did not store; ``corrector(problem,
    rl_text)`` a correction the run has not (val and test), kept in ``asked`` so that it is asked once.
    """
    asked = {} if asked is None else asked
    texts = {name: sources.texts.get(name, {}).get(qid) for name in COLUMNS}
    notes = {name: sources.notes.get(name, "") for name in COLUMNS}
    key = (sources.split, qid)
    if texts["Teacher correction"] is None:
        if key not in asked and corrector is not None and texts["after RL"] is not None:
            asked[key] = corrector(sources.problems[qid], texts["after RL"])
        if asked.get(key) is not None:
            texts["Teacher correction"] = asked[key]
            notes["Teacher correction"] = "asked on demand (display only, not trained on)"
    out, previous = [], None
    for name in COLUMNS:
        text = texts[name]
        if compare == "previous":
            reference = previous
        elif compare in COLUMNS and compare != name:
            reference = texts[compare]
        else:
            reference = None
        scores = None
        if text is not None and name != "gold":
            scores = sources.stored_scores(qid, text)
            if scores is None and scorer is not None:
                scores = scorer(sources.problems[qid], text)
        out.append(Column(name, text, reference, scores, notes[name], scored=name != "gold"))
        if text is not None:
            previous = text
    return out


# ---- the widget --------------------------------------------------------------------------------


def first_problem_html(sources_by_split: Mapping[str, RationaleSources], scorer=None, n: int = 2,
                       asked: Optional[Asked] = None) -> str:
    """The first ``n`` problems of the first split as the panel shows them: its static view
    (with the corrections the panel asked for, given its ``asked``)."""
    split, src = next(iter(sources_by_split.items()))
    parts = []
    for qid in src.qids()[:n]:
        problem = src.problems[qid]
        parts.append(comparison_html(problem, problem_columns(src, qid, "previous", scorer, asked=asked),
                                     image_data_url(problem.get("image"))))
    return "".join(parts) or '<span class="ares-missing">no problems</span>'


def rationale_panel(sources_by_split: Mapping[str, RationaleSources], scorer=None, corrector=None,
                    asked: Optional[Asked] = None):
    """An ipywidgets panel: pick split, problem and comparison; see the columns side by side.

    It opens on the first problem of the first split. ``scorer(problem, text) -> list[float] |
    None`` scores unscored rationales on demand; pass one only when scoring is cheap (local
    Teacher or a warm cache), else sentences show "—". ``corrector(problem, rl_text) -> str |
    None`` likewise asks for corrections of val/test; they are kept in ``asked``.
    """
    import ipywidgets as w  # deferred: the HTML builders above are used without a kernel

    asked = {} if asked is None else asked
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
        out.value = comparison_html(problem, problem_columns(src, qid, compare_box.value, scorer, corrector, asked),
                                    image_data_url(problem.get("image")))

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


def show_rationale_panel(sources_by_split: Mapping[str, RationaleSources], scorer=None, corrector=None,
                         n_static: int = 2) -> None:
    """Display the panel and, under it, the static view of the first ``n_static`` problems."""
    asked: Asked = {}
    panel = rationale_panel(sources_by_split, scorer, corrector, asked)
    show_panel(panel, first_problem_html(sources_by_split, scorer, n_static, asked),
               f"the first {n_static} problems of the {next(iter(sources_by_split))} split")
