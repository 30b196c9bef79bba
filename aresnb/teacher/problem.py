"""What the Teacher is shown about a problem: a light, torch-free view of one dataset row."""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def collapse(text: str) -> str:
    """Whitespace collapsed to single spaces (the paper's prompt formats do the same)."""
    return re.sub(r"\s+", " ", str(text or "")).strip()


@dataclass(frozen=True)
class ProblemView:
    qid: str
    question: str
    choices: tuple[str, ...]
    answer: int
    hint: str = ""
    caption: str = ""
    image: str = ""  # path of the image file, "" when the problem has none
    solution: str = ""
    image_record: str = ""  # JSON of what a synthetic image shows; "" for real data

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "ProblemView":
        """From a row of the problem schema (docs/architecture.md); names the qid on bad input."""
        qid = str(row.get("qid", "?"))
        try:
            choices = tuple(str(c) for c in row["choices"])
            answer = int(row["answer"])
            question = str(row["question"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"problem {qid}: missing or invalid question/choices/answer ({e})") from e
        if not 0 <= answer < len(choices):
            raise ValueError(f"problem {qid}: answer index {answer} outside choices {list(choices)}")
        return cls(
            qid=qid, question=question, choices=choices, answer=answer,
            hint=str(row.get("hint") or ""), caption=str(row.get("caption") or ""),
            # a referenced but absent image (kept with zero features) is not sent
            image=str(row.get("image") or "") if row.get("has_image", True) and not row.get("features_zeroed") else "",
            solution=str(row.get("solution") or ""), image_record=str(row.get("image_record") or ""),
        )

    # ---- text the prompts use -------------------------------------------------------------
    @property
    def context(self) -> str:
        ctx = " ".join(t for t in (collapse(self.hint), collapse(self.caption)) if t)
        return ctx or "N/A"

    @property
    def options_text(self) -> str:
        return " ".join(f"({LETTERS[i]}) {collapse(c)}" for i, c in enumerate(self.choices))

    @property
    def answer_text(self) -> str:
        return f"({LETTERS[self.answer]}) {collapse(self.choices[self.answer])}"

    @property
    def record(self) -> dict | None:
        return json.loads(self.image_record) if self.image_record else None

    # ---- image ----------------------------------------------------------------------------
    def image_bytes(self) -> bytes | None:
        if not self.image:
            return None
        path = Path(self.image)
        if not path.exists():
            raise FileNotFoundError(f"problem {self.qid}: image file not found: {path}")
        return path.read_bytes()

    def image_data_url(self) -> str | None:
        data = self.image_bytes()
        if data is None:
            return None
        mime = mimetypes.guess_type(self.image)[0] or "image/png"
        return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()
