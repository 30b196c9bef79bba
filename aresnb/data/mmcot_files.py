"""MM-CoT's data files: its precomputed image features and its InstructBLIP captions.

The paper's runs do not extract features or captions themselves; they read MM-CoT's:

- a features file (``vision_features/vit.pth``: one tensor (rows, patches, dim), (n, 145, 1024)
  for ViT-L/32; a ``.npy`` array works too) and ``name_map.json`` ``{qid: row}`` (rows as ints or
  numeric strings). MM-CoT's rule, kept here: a qid in the name map gets its row, any other qid
  zeros of the row shape. The name map is built from the image folders, so it also holds
  problems whose only images are answer choices (``image`` null in problems.json): they get their
  row as in MM-CoT. A problem WITH an image but no row would silently get zeros there; here it is
  an error listing the qids.
- ``instruct_captions.json`` ``{"captions": {qid: text}}``: every qid in it gets that caption
  (MM-CoT's rule), every other qid none; it replaces the dataset's own ``captions.json``.

``features_zeroed`` keeps its meaning, "the referenced image file is absent" (the Teacher gets no
image); with precomputed features such a problem still gets its row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .schema import DataError, read_json_file

SHOWN_QIDS = 20  # an error lists this many qids, then the count


def _listing(qids: list[str]) -> str:
    head = ", ".join(qids[:SHOWN_QIDS])
    return head + (f", ... ({len(qids)} in all)" if len(qids) > SHOWN_QIDS else f" ({len(qids)})")


def read_name_map(path: str | Path) -> dict[str, int]:
    """``{qid: row}`` from MM-CoT's name_map.json; a non-integer row is an error naming its qid."""
    raw = read_json_file(path, "MM-CoT name map (data.name_map)")
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected an object {{qid: row}}, got {type(raw).__name__}")
    rows = {}
    for qid, row in raw.items():
        try:
            rows[str(qid)] = int(row)  # MM-CoT writes ints, its shipped file numeric strings
        except (TypeError, ValueError):
            raise DataError(f"{path}: qid {qid!r} maps to {row!r}, not a row number") from None
    return rows


def open_feature_table(path: str | Path) -> Any:
    """The (rows, patches, dim) table of a features file, memory-mapped where the format allows:
    a torch file holding one tensor (MM-CoT's ``vit.pth``) or a ``.npy`` array."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing features file: {path} (data.features_file)")
    if path.suffix == ".npy":
        table = np.load(path, mmap_mode="r")
    else:
        try:
            table = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a legacy (non-zip) torch.save file cannot be memory-mapped
            table = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a pickle that is not plain tensors, a corrupt file
            raise DataError(f"{path}: not a torch file holding one tensor ({type(e).__name__}: {str(e)[:200]})") from None
        if not isinstance(table, torch.Tensor):
            raise DataError(f"{path}: expected one tensor (rows, patches, dim), got {type(table).__name__}")
    if len(table.shape) != 3:
        raise DataError(f"{path}: expected a (rows, patches, dim) array, got shape {tuple(table.shape)}")
    return table


class PrecomputedFeatures:
    """MM-CoT's features as stage 01's feature source: rows looked up by qid through the name map."""

    def __init__(self, features_file: str | Path, name_map_file: str | Path,
                 expected_shape: list[int] | tuple[int, ...] | None = None):
        self.model_id = f"precomputed {Path(features_file).name} (name map {Path(name_map_file).name})"
        self.table = open_feature_table(features_file)
        self.name_map = read_name_map(name_map_file)
        n, patches, dim = (int(x) for x in self.table.shape)
        if expected_shape is not None and (patches, dim) != tuple(int(x) for x in expected_shape):
            raise DataError(f"{features_file}: rows of shape {(patches, dim)}, but data.features_shape is "
                            f"{tuple(expected_shape)}")
        outside = sorted((q for q, r in self.name_map.items() if not 0 <= r < n), key=_qid_order)
        if outside:
            raise DataError(f"{name_map_file}: rows beyond the {n} of {features_file} for qids {_listing(outside)}")
        self.feature_shape = (patches, dim)
        self.last_stats = {"images": 0, "rows": 0, "zeros": 0}

    def check_coverage(self, rows_by_split: dict[str, list[dict]]) -> None:
        """Every problem with an image has a row: else an error listing the qids (before any work)."""
        lacking = [r["qid"] for rows in rows_by_split.values() for r in rows
                   if r["has_image"] and r["qid"] not in self.name_map]
        if lacking:
            raise DataError(f"{len(lacking)} problem(s) with an image have no row in the name map "
                            f"(data.name_map): qids {_listing(lacking)}")

    def fill(self, rows: list[dict], out: np.ndarray) -> np.ndarray:
        """Write row i's features into ``out[i]`` (zeros for a qid without a row); counts in ``last_stats``."""
        if out.shape != (len(rows), *self.feature_shape):
            raise ValueError(f"out has shape {out.shape}, expected {(len(rows), *self.feature_shape)}")
        stats = {"images": sum(bool(r["has_image"]) for r in rows), "rows": 0, "zeros": 0}
        for i, r in enumerate(rows):
            row = self.name_map.get(r["qid"])
            if row is None:
                out[i] = 0
                stats["zeros"] += 1
                continue
            value = self.table[row]
            out[i] = value.float().numpy() if isinstance(value, torch.Tensor) else value
            stats["rows"] += 1
        self.last_stats = stats
        return out


def _qid_order(qid: str) -> tuple:
    return (0, int(qid), "") if qid.isdigit() else (1, 0, qid)


def read_captions(path: str | Path) -> dict[str, str]:
    """``{qid: caption}`` from a ``{"captions": {qid: text}}`` file; a malformed one fails naming the key."""
    raw = read_json_file(path, "captions file (data.captions_file)")
    if not isinstance(raw, dict) or "captions" not in raw:
        found = f"keys {sorted(raw)[:10]}" if isinstance(raw, dict) else type(raw).__name__
        raise DataError(f"{path}: expected {{\"captions\": {{qid: text}}}}, no key 'captions' ({found})")
    captions = raw["captions"]
    if not isinstance(captions, dict):
        raise DataError(f"{path}: key 'captions' must map qids to texts, got {type(captions).__name__}")
    bad = [str(q) for q, text in captions.items() if not isinstance(text, str)]
    if bad:
        raise DataError(f"{path}: captions of qids {_listing(bad)} are not strings")
    return {str(q): text for q, text in captions.items()}


def apply_captions(rows: list[dict], captions: dict[str, str]) -> list[dict]:
    """Rows with the file's caption of their qid, or none (MM-CoT: ``captions.get(qid, "")``)."""
    return [{**r, "caption": captions.get(r["qid"], "")} for r in rows]
