"""Headless JupyterLab driven through Chromium's DevTools protocol: open a notebook, let its kernel
start (JupyterLab then writes the kernel's spec and language_info into the notebook), save it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import websocket

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--window-size=1400,1000"]
CURRENT = ("(() => { const a = window.jupyterapp; if (!a) return 'no app'; const w = a.shell.currentWidget;"
           " if (!w || !w.sessionContext || w.context.path !== %s) return 'not open';"
           " const k = w.sessionContext.session && w.sessionContext.session.kernel;"
           " return k ? k.status + (w.model.metadata.language_info ? '/language_info' : '') : 'no kernel'; })()")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout_s: float = 120.0):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"JupyterLab: {what} did not happen within {timeout_s:.0f} s")


class HeadlessLab:
    """``with HeadlessLab(root, scratch, bin_dir) as lab: lab.open_and_save("notebooks/x.ipynb")``."""

    def __init__(self, root: Path, scratch: Path, bin_dir: Path, chromium: str):
        self.root, self.scratch, self.bin_dir, self.chromium = root, scratch, bin_dir, chromium
        self.token, self._id = "aresnb-test", 0

    def __enter__(self) -> "HeadlessLab":
        lab_port, cdp_port = _free_port(), _free_port()
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(self.scratch / "runtime"),
               "JUPYTER_DATA_DIR": str(self.scratch / "data"),  # nothing of the test in this user's folders
               "JUPYTERLAB_WORKSPACES_DIR": str(self.scratch / "workspaces"), "JUPYTERLAB_SETTINGS_DIR": str(self.scratch / "settings")}
        self.lab = subprocess.Popen(
            [str(self.bin_dir / "jupyter-lab"), "--no-browser", "--allow-root", f"--port={lab_port}",
             f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = base = f"http://127.0.0.1:{lab_port}"
        _wait("the server start", lambda: self._get(f"{base}/api/status?token={self.token}"))
        self.browser = subprocess.Popen(
            [self.chromium, *CHROMIUM_FLAGS, f"--remote-debugging-port={cdp_port}",
             f"--user-data-dir={self.scratch / 'chromium'}", f"{base}/lab?token={self.token}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pages = _wait("the browser start", lambda: self._get(f"http://127.0.0.1:{cdp_port}/json"))
        url = next(p["webSocketDebuggerUrl"] for p in json.loads(pages) if p.get("type") == "page")
        self.ws = websocket.create_connection(url, timeout=60)
        _wait("the app start", lambda: self.evaluate("!!(window.jupyterapp && window.jupyterapp.shell)"))
        return self

    def __exit__(self, *exc) -> None:
        for proc in (getattr(self, "browser", None), self.lab):
            if proc is not None:
                proc.terminate()
                proc.wait(30)

    @staticmethod
    def _get(url: str) -> str | None:
        try:
            return urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            return None

    def evaluate(self, expression: str):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": "Runtime.evaluate",
                                 "params": {"expression": expression, "awaitPromise": True, "returnByValue": True}}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                return msg.get("result", {}).get("result", {}).get("value")

    def open_and_save(self, path: str) -> None:
        """Open ``path`` (relative to the server's root) as a user's link would, wait for its idle
        kernel, save it."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": "Page.navigate",
                                 "params": {"url": f"{self.base}/lab/tree/{path}?token={self.token}&reset"}}))
        _wait(f"{path}'s kernel", lambda: self.evaluate(CURRENT % json.dumps(path)) == "idle/language_info", 180)
        assert self.evaluate("window.jupyterapp.commands.execute('docmanager:save').then(() => 'saved')") == "saved"
