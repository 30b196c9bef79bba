"""`python -m aresnb.pipeline.notebook_html install` (make setup): exit 0 only when the html-manager bundle is
installed. npm is faked (no network): absent, failing, a tarball that fails the pinned integrity,
and a good one."""

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from aresnb.pipeline import notebook_html

from conftest import ROOT


def _tarball(version: str = "1.0.15") -> bytes:
    files = {"package/dist/embed.js": b"console.log('embed');", "package/dist/embed.js.LICENSE.txt": b"BSD-3",
             "package/package.json": json.dumps({"version": version}).encode()}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def bundle_dir(tmp_path, monkeypatch):
    target = tmp_path / "share" / "html-manager"
    monkeypatch.setattr(notebook_html, "ASSET_DIR", target)
    return target


def _fake_npm(monkeypatch, tarball: bytes | None, returncode: int = 0, stderr: str = "") -> list:
    """npm on the PATH whose ``npm pack`` writes ``tarball`` (None: nothing) where it is told; its calls."""
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        if tarball is not None:
            dest = Path(cmd[cmd.index("--pack-destination") + 1])
            (dest / "jupyter-widgets-html-manager-1.0.15.tgz").write_bytes(tarball)
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    monkeypatch.setattr(notebook_html.shutil, "which", lambda name: "/fake/bin/npm" if name == "npm" else None)
    monkeypatch.setattr(notebook_html.subprocess, "run", run)
    return calls


def test_no_npm_exits_1_and_installs_nothing(bundle_dir, monkeypatch, capsys):
    monkeypatch.setattr(notebook_html.shutil, "which", lambda name: None)
    assert notebook_html.main(["install"]) == 1
    assert "npm not found" in capsys.readouterr().err and not bundle_dir.exists()


def test_a_failing_npm_pack_exits_1(bundle_dir, monkeypatch, capsys):
    _fake_npm(monkeypatch, None, returncode=1, stderr="npm ERR! code E404")
    assert notebook_html.main(["install"]) == 1
    assert "E404" in capsys.readouterr().err and not bundle_dir.exists()


def test_a_tarball_that_fails_the_pinned_integrity_exits_1_and_installs_nothing(bundle_dir, monkeypatch, capsys):
    _fake_npm(monkeypatch, _tarball())  # not the published tarball: its sha512 differs from the pin
    assert notebook_html.main(["install"]) == 1
    assert "does not match the pinned integrity" in capsys.readouterr().err and not bundle_dir.exists()


def test_the_pinned_tarball_installs_and_exits_0_then_stays_installed(bundle_dir, monkeypatch, capsys):
    good = _tarball()
    monkeypatch.setattr(notebook_html, "HTML_MANAGER_INTEGRITY", notebook_html._integrity(good))
    calls = _fake_npm(monkeypatch, good)
    assert notebook_html.main(["install"]) == 0
    assert "bundled @jupyter-widgets/html-manager 1.0.15" in capsys.readouterr().out
    assert (bundle_dir / "embed.js").read_text() == "console.log('embed');"
    assert sorted(p.name for p in bundle_dir.iterdir()) == ["embed.js", "embed.js.LICENSE.txt", "package.json"]
    assert notebook_html.main(["install"]) == 0 and len(calls) == 1  # there already: npm not asked again
    assert notebook_html.main([]) == 2


def test_make_setup_stops_on_a_lost_bundle_under_strict_mode():
    [line] = [ln for ln in (ROOT / "Makefile").read_text().splitlines() if "notebook_html install" in ln
              and not ln.lstrip().startswith("#")]
    # `|| true` or a bare `-` prefix would let CI go green without the bundle
    assert line.split(" || ")[1].startswith('{ [ "$${ARESNB_STRICT:-0}" = 0 ]') and "true" not in line
