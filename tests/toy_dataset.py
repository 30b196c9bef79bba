"""A dataset kept outside aresnb, in one file: small sums in words, every other one with a picture.

``data.source: toy`` with ``data.dataset_file`` pointing here runs it through every stage
(tests/test_dataset_registry.py). A new dataset is this much: a reader into the problem schema
(``aresnb.data.schema.make_problem``) and its record.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from PIL import Image

from aresnb.data.registry import Dataset, Folders
from aresnb.data.schema import make_problem

SIZES = {"train": 12, "val": 4, "test": 4}
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220)}


def _problem(split: str, i: int, rng: random.Random, image_dir: Path) -> dict:
    a, b = rng.randint(1, 5), rng.randint(1, 4)
    total = a + b
    choices = [str(total), str(total + 1), str(max(0, total - 2))]
    rng.shuffle(choices)
    fixed: dict[str, Any] = {"split": split}
    statements = [f"{a} plus {b} makes {total}."]
    if i % 2:  # the colour of the picture names the unit counted
        colour = rng.choice(sorted(COLOURS))
        path = image_dir / f"{split}-{i}.png"
        Image.new("RGB", (32, 32), COLOURS[colour]).save(path)
        fixed.update(image=str(path), has_image=True)
        statements.insert(0, f"The picture is {colour}, so we count {colour} apples.")
    raw = {"question": f"Tom has {a} apples and gets {b} more. How many apples does he have?",
           "choices": choices, "answer": choices.index(str(total)), "hint": "Add the two numbers.",
           "subject": "natural science", "grade": "grade2", "lecture": "Adding puts two amounts together.",
           "solution": " ".join(statements) + f" The answer is {total}."}
    return make_problem(raw, qid=f"toy-{split}-{i}", file=__file__, required=("question", "choices", "answer"), **fixed)


def read(d: Any, seed: int, folders: Folders) -> tuple[dict[str, list[dict]], dict, str]:
    image_dir = Path(folders.generated)
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = {split: [_problem(split, i, rng, image_dir) for i in range(n)] for split, n in SIZES.items()}
    return rows, {"skipped": 0, "zero_filled": 0}, f"toy sums (seed {seed}) at {image_dir}"


DATASET = Dataset(
    name="toy",
    title="toy sums in words",
    read=read,
    generated=True,
    metric="accuracy (%) of toy sums",
)
