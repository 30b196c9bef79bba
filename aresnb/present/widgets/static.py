"""Show a live panel with a static view of its first items under it.

A widget needs a live kernel (or a widget manager in an exported page); an executed notebook read
in nbconvert's HTML, on a code host or in a viewer that runs no JavaScript shows the static view.
"""

from __future__ import annotations

import html

STATIC_CSS = ".aresnb-static{margin-top:8px;border-top:1px dashed #ccc;padding-top:4px}"


def static_view_html(static_html: str, what: str) -> str:
    """The static view: an open ``<details>`` block titled with what it shows."""
    return (f'<details open class="aresnb-static"><style>{STATIC_CSS}</style><summary>Static view: '
            f"{html.escape(what)} (what the panel above shows first; kept in the saved notebook)</summary>"
            f"{static_html}</details>")


def show_panel(panel, static_html: str, what: str) -> None:
    """Display ``panel`` and, under it, :func:`static_view_html` of ``static_html``."""
    from IPython.display import HTML, display  # deferred: needs IPython, i.e. a kernel

    display(panel)
    display(HTML(static_view_html(static_html, what)))
