"""What a dataset is, and where each one is found: one record per dataset, one file per record.

A dataset is a :class:`Dataset`: its name (``data.source``), how it reads its rows into the problem
schema, what configuration it requires, the per-problem lengths the cost estimate falls back on, the
metric stage 06 reports, and the paper's numbers a run on it is shown beside. Every reader asks the
record: stage 01 reads rows through it, config checks ``data.source`` against the registry,
``aresnb estimate``, preflight, stages 06-07 and the report take its figures from it.

Where records live:
- built in: one module per dataset in ``aresnb/data/datasets/``, each defining ``DATASET``; the
  module's name is the dataset's name (adding one is that file plus a parameter file);
- anywhere else: a Python file named by ``data.dataset_file`` that defines ``DATASET``, whose name
  ``data.source`` then gives. A file, not an in-process registration, because every stage runs in
  a notebook kernel (or an ``accelerate launch`` process) of its own: each process finds the record
  from the parameters alone.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.util
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .schema import DataError

if TYPE_CHECKING:  # config imports this module to check data.source: the type only, never at run time
    from aresnb.config.sections import DataConfig

BUILTIN_PACKAGE = "aresnb.data.datasets"
# A relative data.dataset_file is read from notebooks/, as every relative path of the parameters
# (the stages run there), whichever folder the process that asks started in.
NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"


@dataclass(frozen=True)
class Folders:
    """Where a loader may write inside the run (stage 01 passes its folders; the estimate a temp dir)."""

    generated: Path  # a dataset the project writes itself (the synthetic one), in its original layout
    downloads: Path  # images a hub dataset brings as bytes, written out as files


@dataclass(frozen=True)
class FallbackLengths:
    """Per-problem lengths in characters, and split sizes, for ``aresnb estimate`` when the data
    cannot be read on the machine that estimates (a paper-scale file planned on a laptop)."""

    splits: Mapping[str, int]
    question: int
    hint: int
    choices: tuple[int, ...]
    solution: int
    image_share: float


# read(data config section, run seed, folders) -> ({split: rows}, {"skipped", "zero_filled"}, description)
Reader = Callable[[Any, int, Folders], "tuple[dict[str, list[dict]], dict, str]"]


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str  # how the report names it
    read: Reader
    generated: bool = False  # made by the project (no files to read): a run on it is a smoke check
    needs_location: bool = False  # data.path or data.hub_id must say where it is
    local_dirs: tuple[str, ...] = ()  # further data.* keys that name folders when data.path is used
    fallback: FallbackLengths | None = None
    metric: str = "accuracy (%) by ScienceQA category"
    paper_win_rate: Mapping[str, float] = field(default_factory=dict)  # model size -> %
    paper_accuracy: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # size -> category -> %
    paper_accuracy_gain_pts: float | None = None

    def reference_win_rate(self, size: str | None) -> float | None:
        """The paper's win rate (%) for this model size, or None when the paper has none."""
        return self.paper_win_rate.get(size) if size else None

    def reference_accuracy(self, size: str | None) -> dict[str, dict[str, float]]:
        """Paper rows for the accuracy table, {label: {category: %}}: this size's, or every size's
        when the model has none (a tiny model); empty when the paper reports none."""
        sizes = [size] if size else list(self.paper_accuracy)
        return {f"MM-CoT {s.capitalize()} (paper)": dict(self.paper_accuracy[s]) for s in sizes
                if s in self.paper_accuracy}


def builtin_names() -> list[str]:
    """The datasets of ``aresnb/data/datasets/`` (module names; nothing is imported)."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


@functools.lru_cache(maxsize=None)
def _record_of_file(path: str) -> Dataset:
    spec = importlib.util.spec_from_file_location(f"aresnb_dataset_{hashlib.sha256(path.encode()).hexdigest()[:8]}", path)
    if spec is None or spec.loader is None:
        raise DataError(f"data.dataset_file {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import does: dataclasses and pickle look the module up there
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - whatever the file raises, the parameter that named it is the news
        del sys.modules[spec.name]
        raise DataError(f"data.dataset_file {path}: {type(e).__name__}: {e}") from e
    return _record_in(module, f"data.dataset_file {path}")


def _record_in(module: Any, where: str) -> Dataset:
    record = getattr(module, "DATASET", None)
    if not isinstance(record, Dataset):
        raise DataError(f"{where} defines no DATASET (an aresnb.data.registry.Dataset)")
    return record


def find(name: str, dataset_file: str | Path | None = None) -> Dataset:
    """The record of ``name``: from ``dataset_file`` when given, else the built-in of that name."""
    if dataset_file:
        path = resolve_file(dataset_file)
        if not path.is_file():
            raise DataError(f"data.dataset_file: file not found: {path} (a relative path is read from notebooks/)")
        record = _record_of_file(str(path))
        if record.name != name:
            raise DataError(f"data.dataset_file {path} defines dataset {record.name!r}, but data.source is {name!r}")
        return record
    names = builtin_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"unknown data.source {name!r}{hint}: the datasets are {', '.join(names)} "
                        "(or set data.dataset_file to a file that defines one)")
    return _record_in(importlib.import_module(f"{BUILTIN_PACKAGE}.{name}"), f"{BUILTIN_PACKAGE}.{name}")


def resolve_file(dataset_file: str | Path) -> Path:
    path = Path(dataset_file).expanduser()
    return (path if path.is_absolute() else NOTEBOOKS_DIR / path).resolve()


def dataset(data_cfg: DataConfig) -> Dataset:
    """The record the data section names (``data.source``, ``data.dataset_file``)."""
    return find(data_cfg.source, data_cfg.dataset_file)


def check(data_cfg: DataConfig) -> Dataset:
    """The record, once the section gives what it requires; a DataError says what is missing."""
    record = dataset(data_cfg)
    if record.needs_location and not (data_cfg.path or data_cfg.hub_id):
        raise DataError(f"data.source={record.name!r} needs data.path or data.hub_id")
    return record


def file_digest(data_cfg: DataConfig) -> str | None:
    """A hash of ``data.dataset_file``'s code (None without one): a changed loader is a changed step."""
    if not data_cfg.dataset_file:
        return None
    path = resolve_file(data_cfg.dataset_file)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"
