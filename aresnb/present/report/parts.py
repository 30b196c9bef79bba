"""HTML pieces of the report: escaping, machine paths scrubbed, tables, figures, cards, the styles."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from aresnb.stages.steps import PROJECT_ROOT

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1120px;
padding:1.5em;color:#222;line-height:1.45}
h1{margin-bottom:.1em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
h3{margin-bottom:.3em} .muted{color:#666;font-size:.9em} .headline{display:flex;gap:1em;flex-wrap:wrap}
.banner{border-radius:8px;padding:.7em 1.1em;margin:1em 0;font-size:.95em}
.banner.smoke{background:#fff8e1;border:1px solid #f0c36d} .banner.paper{background:#e8f4fd;border:1px solid #8cc4ec}
.card{border:1px solid #ddd;border-radius:8px;padding:.8em 1.1em;min-width:200px;max-width:330px;background:#fafafa}
.card .big{font-size:1.7em;font-weight:600} .card.regress{border:2px solid #d62728;background:#fff4f4}
.card.gain{border-color:#8fd18f} .flag{display:inline-block;font-size:.75em;font-weight:600;color:#fff;
background:#d62728;border-radius:4px;padding:0 .4em;margin-left:.4em;vertical-align:middle}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.88em}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right} th{background:#f0f0f0}
td.t,th.t{text-align:left} td.neg{background:#fde2e2;color:#a01515} .tw{overflow-x:auto}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#444;max-width:950px} pre{background:#f6f6f6;padding:.7em;overflow-x:auto;font-size:.8em}
iframe.examples{width:100%;height:720px;border:1px solid #ddd;border-radius:6px}
nav a{margin-right:.9em;font-size:.9em}
"""

_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/>-])/(?:[\w.@+-]+/)+[\w.@+-]*")


def e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def pct(x: Any, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * float(x):.{digits}f}%"


def _short_path(path: str) -> str:
    """An absolute path without this machine in it: installed packages by their name, the
    project's files relative to it, anything else by its last two parts."""
    if "/site-packages/" in path:
        return "<packages>/" + path.split("/site-packages/", 1)[1]
    if path == str(PROJECT_ROOT) or path.startswith(str(PROJECT_ROOT) + "/"):
        return "." + path[len(str(PROJECT_ROOT)):]
    return "…/" + "/".join(path.rstrip("/").split("/")[-2:])


def scrub(value: Any, run_dir: Path) -> Any:
    """``value`` (text or nested JSON) without this machine's paths: the run folder becomes
    ``<run>``, the folder of runs ``<outputs>``, other absolute paths :func:`_short_path`."""
    if isinstance(value, Mapping):
        return {k: scrub(v, run_dir) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, run_dir) for v in value]
    if not isinstance(value, str):
        return value
    text = value
    for folder, name in ((Path(run_dir), "<run>"), (Path(run_dir).parent, "<outputs>")):
        for form in dict.fromkeys((str(folder.resolve()), str(folder))):
            text = text.replace(form, name)
    return _ABSOLUTE_PATH.sub(lambda m: _short_path(m.group(0)), text)


def json_block(title: str, data: Any, run_dir: Path) -> str:
    return f"<details><summary>{e(title)}</summary><pre>{e(json.dumps(scrub(data, run_dir), indent=2, ensure_ascii=False))}</pre></details>"


def table_html(rows: Sequence[Sequence[Any]], header: Sequence[str], text_columns: Sequence[int] = (0,),
               cell_class: Callable[[int, int], str] | None = None) -> str:
    """A table of already formatted cells; ``cell_class(row, col)`` may mark a cell (e.g. 'neg')."""
    head = "".join(f'<th class="{"t" if j in text_columns else ""}">{e(h)}</th>' for j, h in enumerate(header))
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, v in enumerate(row):
            cls = " ".join(c for c in ("t" if j in text_columns else "", cell_class(i, j) if cell_class else "") if c)
            cells.append(f'<td class="{cls}">{e(v)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="tw"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def frame_html(df: pd.DataFrame, digits: int = 3, cell_class: Callable[[int, int], str] | None = None) -> str:
    """A DataFrame as a table: numbers rounded, text columns left-aligned."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "–" if pd.isna(v) else f"{v:.{digits}f}"
        return str(v)

    text = [j for j, c in enumerate(df.columns)
            if not (pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]))]
    rows = [[cell(v) for v in row] for row in df.itertuples(index=False)]
    return table_html(rows, [str(c) for c in df.columns], text, cell_class)


def figure_html(path: Path, title: str, caption: str) -> str:
    """A PNG inlined (base64), with its title, caption and the relative links to PNG and PDF."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    pdf = path.with_suffix(".pdf")
    links = f'<a href="figures/{e(path.name)}">PNG</a>' + (f' · <a href="figures/{e(pdf.name)}">PDF</a>' if pdf.exists() else "")
    return (f'<figure id="fig-{e(path.stem)}"><img class="figure" alt="{e(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{e(title)}.</b> {e(caption)} ({links})</figcaption></figure>")


def card_html(title: str, value: str, detail: str, regression: bool | None) -> str:
    """A headline number; a regression is framed red and flagged."""
    cls = "card regress" if regression else "card gain" if regression is False else "card"
    flag = '<span class="flag">regression</span>' if regression else ""
    return (f'<div class="{cls}"><div class="muted">{e(title)}{flag}</div><div class="big">{e(value)}</div>'
            f'<div class="muted">{e(detail)}</div></div>')
