"""The wheel folder that travels to the GPU machine with the working tree, and the environment the
GPU check finds there. Standard library only: it runs before anything is installed.

    python3 benchmarks/gpu_carry.py check FOLDER          # after make gpu-wheels: sizes and limits
    python3 benchmarks/gpu_carry.py verify FOLDER         # there: the wheel was built from this tree
    python3 benchmarks/gpu_carry.py versions [--site DIR] # there: what the check will import, and from where

The GPU machine's image has Python 3.12, torch, transformers, tokenizers, accelerate, safetensors,
numpy, PyYAML, pillow (and peft at a version nobody has read), no network, and not this project.
``make gpu-wheels`` fills the folder with this project's wheel and peft at the version
pyproject.toml pins; everything else the check imports must come from the image (``versions``
says in one line what is missing).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import platform
import sys
import zipfile
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parent.parent
LIMIT_MIB = 40  # the folder's share of the 64 MiB the working tree may weigh when it travels
# What benchmarks/gpu_check.py imports outside the standard library: import name -> distribution.
NEEDED = {"torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers", "accelerate": "accelerate",
          "peft": "peft", "safetensors": "safetensors", "huggingface_hub": "huggingface_hub", "numpy": "numpy",
          "yaml": "PyYAML", "PIL": "pillow", "aresnb": "aresnb"}


def source_digest(root: Path = ROOT) -> str:
    """sha256 over ``root``'s aresnb/ Python files (paths and bytes): a tree, or a folder the
    project's wheel was installed to (the same files, the same digest)."""
    files = {path.relative_to(root).as_posix(): path for path in (root / "aresnb").rglob("*.py")
             if "__pycache__" not in path.parts}
    return _digest((name, files[name].read_bytes()) for name in sorted(files))


def wheel_digest(wheel: Path) -> str:
    """The same digest over the aresnb/ Python files inside the project's wheel."""
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if n.startswith("aresnb/") and n.endswith(".py"))
        return _digest((name, z.read(name)) for name in names)


def _digest(files: Iterable[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for name, data in files:
        h.update(name.encode() + b"\0" + data + b"\0")
    return h.hexdigest()


def wheel_name(wheel: Path) -> tuple[str, str, str]:
    """(distribution, version, tags) of a wheel file name."""
    parts = wheel.name[: -len(".whl")].split("-")
    return parts[0].lower().replace("_", "-"), parts[1], "-".join(parts[-3:])


def check(folder: Path) -> int:
    """List the folder's wheels; fail over the size limit, on two versions of one distribution or
    on a wheel that is not for every platform without saying so."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        print(f"gpu_carry: no wheels in {folder} (make gpu-wheels)")
        return 1
    total, names = 0, {}
    for wheel in wheels:
        dist, version, tags = wheel_name(wheel)
        size = wheel.stat().st_size
        total += size
        names.setdefault(dist, []).append(version)
        pure = tags == "py3-none-any"
        note = "" if pure else "  (NOT pure Python: needs cp312 manylinux x86_64)"
        print(f"  {wheel.name}  {size / 2**20:.2f} MiB{note}")
        with zipfile.ZipFile(wheel) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            requires = [line for line in z.read(meta).decode().splitlines() if line.startswith("Requires-Python:")]
        if requires and not _allows_312(requires[0]):
            print(f"gpu_carry: {wheel.name} does not install on Python 3.12 ({requires[0]})")
            return 1
    twice = {d: v for d, v in names.items() if len(v) > 1}
    if twice:
        print(f"gpu_carry: two versions of one distribution stop the whole install: {twice}")
        return 1
    print(f"gpu_carry: {len(wheels)} wheels, {total / 2**20:.2f} MiB together (limit {LIMIT_MIB} MiB)")
    return 1 if total > LIMIT_MIB * 2**20 else 0


def _allows_312(line: str) -> bool:
    """A wheel's Requires-Python line admits Python 3.12 (the GPU machine's)."""
    try:  # packaging where installed, else the copy every pip carries
        from packaging.specifiers import SpecifierSet
    except ImportError:
        from pip._vendor.packaging.specifiers import SpecifierSet
    return "3.12" in SpecifierSet(line.split(":", 1)[1].strip())


def verify(folder: Path) -> int:
    """The project's wheel in ``folder`` holds this tree's aresnb/ sources (else it would measure other code)."""
    wheels = sorted(folder.glob("aresnb-*.whl"))
    if len(wheels) != 1:
        print(f"gpu_carry: {folder} holds {len(wheels)} aresnb wheels, not one: run make gpu-wheels "
              "(on a machine with the package registries)")
        return 2
    if wheel_digest(wheels[0]) != source_digest():
        print(f"gpu_carry: {wheels[0].name} was built from other aresnb/ sources than this tree's: "
              "run make gpu-wheels again")
        return 2
    return 0


def package_versions() -> dict[str, str | None]:
    """Distribution -> installed version (None: absent), without importing anything."""
    out = {}
    for dist in NEEDED.values():
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def versions(site: Path | None, folder: Path | None) -> int:
    """Print Python and each needed package's version and folder; one line naming what is missing;
    a carried package must be found in ``site`` (the private folder wheels were installed to)."""
    print(f"python {platform.python_version()} ({sys.executable}), {platform.machine()}")
    carried = {wheel_name(w)[0] for w in folder.glob("*.whl")} if folder else set()
    found, missing, shadowed = package_versions(), [], []
    for module, dist in NEEDED.items():
        spec = importlib.util.find_spec(module)  # finds without importing
        if spec is None or found[dist] is None:
            missing.append(dist)
            continue
        where = Path(spec.origin or next(iter(spec.submodule_search_locations))).resolve()
        print(f"  {dist} {found[dist]}  {where.parent}")
        if site and dist.lower() in carried and site.resolve() not in where.parents:
            shadowed.append(dist)
    if missing:
        print(f"gpu_carry: missing {', '.join(missing)}: the image lacks them and the wheel folder does not carry them")
        return 2
    if shadowed:
        print(f"gpu_carry: {', '.join(shadowed)} imported from outside {site}: "
              "the carried wheels are not the ones used")
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("check", "verify", "versions"))
    ap.add_argument("folder", nargs="?", type=Path, default=ROOT / ".gpu-wheels")
    ap.add_argument("--site", type=Path, default=None, help="versions: the folder the wheels were installed to")
    args = ap.parse_args(argv)
    if args.command == "check":
        return check(args.folder)
    if args.command == "verify":
        return verify(args.folder)
    return versions(args.site, args.folder if args.folder.exists() else None)


if __name__ == "__main__":
    sys.exit(main())
