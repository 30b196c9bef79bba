"""The notebooks as people open them: JupyterLab leaves committed notebooks unchanged, `make lab`
starts as root, a panel opens on a real item in a kernel and its static view survives export."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from aresnb.pipeline.notebook_html import export_html, is_trusted, trust_notebook, widget_manager_js

from conftest import absent
from test_correction_panel import _fake_run

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--host-resolver-rules=MAP * ~NOTFOUND"]


@pytest.fixture(scope="module")
def kernel_language_info() -> dict:
    """What the project's kernel (`python3`, installed by make setup) reports about its language."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", stderr=subprocess.DEVNULL)
    try:
        msg_id = kc.kernel_info()
        while True:
            reply = kc.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]["language_info"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _save_as_jupyterlab_does(root: Path, name: str, language_info: dict) -> None:
    """Open and save through jupyter_server's contents manager, with what JupyterLab sets: the
    kernel's spec and language_info in the metadata, each cell's source as one string."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_server.services.contents.filemanager import FileContentsManager

    cm = FileContentsManager(root_dir=str(root))
    model = cm.get(name, content=True)
    nb = model["content"]
    spec = KernelSpecManager().get_kernel_spec(nb["metadata"]["kernelspec"]["name"])
    nb["metadata"]["kernelspec"] = {"name": nb["metadata"]["kernelspec"]["name"], "display_name": spec.display_name,
                                    "language": spec.language}
    nb["metadata"]["language_info"] = language_info
    for cell in nb["cells"]:
        cell["source"] = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    cm.save({"type": "notebook", "format": "json", "content": nb}, name)


def test_opening_and_saving_a_committed_notebook_leaves_git_status_clean(tmp_path, kernel_language_info, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))  # saving signs: not in this user's notary
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "notebooks", repo / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")  # the checkpoints JupyterLab keeps are ignored
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "notebooks as committed"], check=True)
    for nb in NOTEBOOKS:
        _save_as_jupyterlab_does(repo, f"notebooks/{nb.name}", kernel_language_info)
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=True).stdout
    diff = subprocess.run([*git, "diff"], capture_output=True, text=True).stdout
    assert status == "", f"saving changed the notebooks:\n{diff[:3000]}"


@pytest.mark.slow
def test_a_real_jupyterlab_opens_and_saves_every_notebook_unchanged(tmp_path):
    from jupyterlab_driver import HeadlessLab

    chromium = shutil.which("chromium")
    if chromium is None:
        absent("chromium is not installed: cannot drive JupyterLab (the contents-manager test still runs)")
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "notebooks", repo / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "notebooks as committed"], check=True)
    (tmp_path / "scratch").mkdir()
    with HeadlessLab(repo, tmp_path / "scratch", Path(sys.executable).parent, chromium) as lab:
        for nb in NOTEBOOKS:
            lab.open_and_save(f"notebooks/{nb.name}")
    saved = sorted(p.name for p in (repo / "notebooks" / ".ipynb_checkpoints").glob("*.ipynb"))
    assert len(saved) == len(NOTEBOOKS)  # JupyterLab really saved each one
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=True).stdout
    diff = subprocess.run([*git, "diff"], capture_output=True, text=True).stdout
    assert status == "", f"JupyterLab changed the notebooks:\n{diff[:3000]}"


def test_committed_notebooks_name_the_projects_kernel():
    for nb_path in NOTEBOOKS:
        nb = json.loads(nb_path.read_text())
        assert nb["metadata"]["kernelspec"] == {"display_name": "Python 3 (aresnb)", "language": "python",
                                                "name": "python3"}, nb_path.name
        assert all("id" in c for c in nb["cells"]), nb_path.name
        assert nbformat.writes(nbformat.reads(nb_path.read_text(), as_version=4)) + "\n" == nb_path.read_text()


@pytest.mark.slow
def test_make_lab_starts_as_root(tmp_path):
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "BROWSER": "true"}
    proc = subprocess.Popen(["make", "-s", "lab", "LAB_ARGS=--no-browser --ServerApp.port=18911 --ServerApp.port_retries=50"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen = []
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            if re.search(r"http://(127\.0\.0\.1|localhost):\d+/lab", line):
                break
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
    out = "".join(seen)
    assert re.search(r"http://(127\.0\.0\.1|localhost):\d+/lab", out), out[-3000:]
    assert "Running as root is not recommended. Use --allow-root" not in out


PANEL_CELLS = [
    "import json\nfrom aresnb.paths import RunPaths\nfrom aresnb.stages.results import read_rationales\n"
    "from aresnb.present.widgets.rationale_panel import rationale_panel, show_rationale_panel",
    "paths = RunPaths.from_dir({run!r})\nproblems = json.loads({problems!r})\n"
    "sources = read_rationales(paths, 1, ('test',), {{'test': problems}})",
    "panel = rationale_panel(sources)\nprint('opens on', panel.children[1].value)",
    "show_rationale_panel(sources)",
]


@pytest.fixture(scope="module")
def executed_panel(tmp_path_factory) -> Path:
    """A notebook that shows the stage-05 panel on a hand-made run, executed in a real kernel."""
    from nbclient import NotebookClient

    from aresnb.pipeline.notebook_exec import ipc_kernel_manager

    tmp = tmp_path_factory.mktemp("panel")
    paths, problems = _fake_run(tmp)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.format(run=str(paths.run_dir), problems=json.dumps(problems)))
                for c in PANEL_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (aresnb)", "language": "python"}
    sockets = tmp / "k"
    sockets.mkdir()
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp)}},
                   kernel_manager_class=ipc_kernel_manager(sockets)).execute()
    out = tmp / "panel.ipynb"
    nbformat.write(nb, out)
    return out


def test_the_panel_opens_on_a_problem_in_a_kernel(executed_panel):
    nb = nbformat.read(executed_panel, as_version=4)
    printed = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert printed.strip() == "opens on q0"
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    dropdowns = [m["state"] for m in state.values() if m["model_name"] == "DropdownModel"]
    problem_boxes = [d for d in dropdowns if d.get("description") == "problem"]
    assert problem_boxes and all(d["index"] == 0 for d in problem_boxes)  # a value, not "no problems"
    shown = [o for o in nb.cells[3].outputs if o.get("output_type") == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" in shown[0]["data"]
    static = shown[1]["data"]["text/html"]
    assert "Static view" in static and "q0" in static and "ares-panel" in static


def test_its_static_view_shows_in_the_nbconvert_export(executed_panel, tmp_path):
    page = export_html(executed_panel, tmp_path / "panel.html").read_text()
    assert "Static view: the first 2 problems of the test split" in page
    assert WIDGET_STATE in page  # the widgets' saved state travels with the page
    assert not re.search(r"""<script[^>]+src=["']?(https?:)?//""", page)  # nothing fetched from a CDN
    if widget_manager_js() is None:
        absent("the html-manager is not bundled (make setup needs npm): widgets cannot be checked offline")
    assert "data:text/javascript;base64," in page  # the bundled manager, inlined
    chromium = shutil.which("chromium")
    if chromium is None:
        absent("chromium is not installed: cannot check that the widgets render offline")
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
                          "--dump-dom", (tmp_path / "panel.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "widget-dropdown" in dom and "q0 — Which is a" in dom  # rendered from the state, offline


def test_executed_notebooks_can_be_marked_trusted(executed_panel, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    copy = tmp_path / "copy.ipynb"
    shutil.copy(executed_panel, copy)
    assert not is_trusted(copy)
    trust_notebook(copy)
    assert is_trusted(copy)
