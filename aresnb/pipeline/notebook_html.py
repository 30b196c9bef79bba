"""Executed notebooks as people open them: trusted in Jupyter, exported to HTML that works offline.

- :func:`trust_notebook` signs an executed notebook in this user's Jupyter notary (what
  "Trust Notebook" does), so JupyterLab renders its HTML outputs with their styles (the Figure-3
  page, the panels' static views) instead of sanitising them.
- :func:`export_html` writes an nbconvert page of an executed notebook. nbconvert's own page
  fetches require.js, MathJax and the widget manager from CDNs (unpinned); ours fetches nothing:
  the widgets' saved state is rendered by ``@jupyter-widgets/html-manager`` (pinned, bundled:
  inlined into the page), and every panel also has a static HTML view under it.
- ``python -m aresnb.pipeline.notebook_html install`` (``make setup``) brings that manager from the npm
  registry with npm, checks the tarball against the pinned integrity and keeps ``dist/embed.js``
  (and its licence notices) under ``<venv>/share/aresnb/``; it exits 1 when the bundle is not
  there afterwards. Without it, exported pages still show the static views; widgets then stay blank.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HTML_MANAGER = "@jupyter-widgets/html-manager"
HTML_MANAGER_VERSION = "1.0.15"  # the html-manager of ipywidgets 8
HTML_MANAGER_INTEGRITY = "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="
ASSET_DIR = Path(sys.prefix) / "share" / "aresnb" / f"html-manager-{HTML_MANAGER_VERSION}"
KEPT_FILES = {"package/dist/embed.js": "embed.js", "package/dist/embed.js.LICENSE.txt": "embed.js.LICENSE.txt",
              "package/package.json": "package.json"}

# The lab template, less everything it would fetch; the widget manager inlined after the state, as
# a data: URL -- webpack's bundle finds its own location through its script's src, which an inline
# script lacks.
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block footer_js %}
{%- if "widgets" in nb.metadata and resources.aresnb_widget_manager -%}
<script data-jupyter-widgets-cdn="about:blank" src="data:text/javascript;base64,{{ resources.aresnb_widget_manager }}"></script>
{%- endif -%}
{% endblock footer_js %}
"""


def widget_manager_js() -> str | None:
    """The bundled html-manager (``embed.js``), or None when ``make setup`` could not bring it."""
    f = ASSET_DIR / "embed.js"
    return f.read_text(encoding="utf-8") if f.exists() else None


def trust_notebook(path: Path) -> None:
    """Sign ``path`` in this user's Jupyter notary: JupyterLab then trusts its outputs."""
    import nbformat
    from nbformat.sign import NotebookNotary

    nb = nbformat.read(str(path), as_version=4)
    NotebookNotary().sign(nb)


def is_trusted(path: Path) -> bool:
    import nbformat
    from nbformat.sign import NotebookNotary

    return bool(NotebookNotary().check_signature(nbformat.read(str(path), as_version=4)))


def export_html(notebook: Path, out: Path) -> Path:
    """An offline HTML page of an executed notebook (widgets rendered from their saved state)."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"aresnb_offline.html.j2": OFFLINE_TEMPLATE})],
                            template_file="aresnb_offline.html.j2")
    nb = nbformat.read(str(notebook), as_version=4)
    manager = widget_manager_js()
    encoded = base64.b64encode(manager.encode("utf-8")).decode("ascii") if manager else ""
    body, _ = exporter.from_notebook_node(nb, resources={"aresnb_widget_manager": encoded})
    out.write_text(body, encoding="utf-8")
    return out


# ---- bringing the html-manager (make setup) ----------------------------------------------------


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def install_widget_manager(target: Path = ASSET_DIR) -> str:
    """Fetch the pinned html-manager tarball with npm, check it, keep embed.js; a one-line outcome."""
    if (target / "embed.js").exists():
        return ""
    npm = shutil.which("npm")
    if npm is None:
        return f"npm not found: {HTML_MANAGER} not bundled; exported notebooks show their panels' static views only"
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([npm, "pack", f"{HTML_MANAGER}@{HTML_MANAGER_VERSION}", "--silent", "--pack-destination", tmp],
                           capture_output=True, text=True, timeout=300)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if r.returncode != 0 or not tarballs:
            return f"npm pack {HTML_MANAGER}@{HTML_MANAGER_VERSION} failed: {(r.stderr or r.stdout).strip()[-300:]}"
        data = tarballs[0].read_bytes()
    if _integrity(data) != HTML_MANAGER_INTEGRITY:
        return f"{HTML_MANAGER}@{HTML_MANAGER_VERSION}: the tarball does not match the pinned integrity; not installed"
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member, name in KEPT_FILES.items():
            (target / name).write_bytes(tar.extractfile(member).read())
    version = json.loads((target / "package.json").read_text())["version"]
    return f"bundled {HTML_MANAGER} {version} (offline widget rendering in exported notebooks)"


def main(argv: list[str] | None = None) -> int:
    """Exit 0 only when the bundle is installed (now or before): a lost bundle must not pass for a
    set-up that worked (``make setup`` decides whether to go on without it)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["install"]:
        print("usage: python -m aresnb.pipeline.notebook_html install", file=sys.stderr)
        return 2
    message = install_widget_manager(ASSET_DIR)
    if not (ASSET_DIR / "embed.js").exists():
        print(f"aresnb.pipeline.notebook_html install: {message or 'embed.js was not installed'}", file=sys.stderr)
        return 1
    if message:
        print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
