"""The embedded default dataset: ScienceQA-style problems written in ScienceQA's original layout.

``write_synthetic_scienceqa(out_dir, ...)`` writes ``problems.json``, ``pid_splits.json``,
``captions.json`` and ``images/<split>/<qid>/image.png`` so the data goes through the same loader
as the real dataset. Deterministic by seed (same seed -> byte-identical files).

Nine families of problem, spread over natural / social / language science and grades 1-12 so
every ScienceQA category column (NAT SOC LAN TXT IMG NO G1-6 G7-12) is populated:

- image problems (IMG): a flat-coloured shape (or 1-3 circles) on white; the question asks its
  colour, its shape or how many circles there are. Question, hint and caption do not reveal the
  answer: only the image does.
- text problems (TXT): the hint holds the facts (names, numbers, a colour) the answer follows from.
- knowledge problems (NO): no hint, no image; a small fixed world of facts.

A gold rationale is a starting thought, the problem's facts, then the conclusion. ARES's Teacher
exists because LLM-written rationales state wrong specifics; so does this data: in a seeded
share ``wrong_fact_rate`` of the TRAIN problems one fact sentence of the gold rationale states a
wrong image- or hint-specific fact (the conclusion stays right). SFT on them learns to state
wrong facts; the Teacher's checked sentence scores can push the model back. Val and test golds
are clean. Names and numbers come from small fixed sets, so a locally trained tokenizer keeps
each one whole.

Every problem carries ``image_record`` (:func:`aresnb.data.synthetic_grader.make_record`): what is
true of it, its starting thoughts; the grader beside this module checks sentences against it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

from PIL import Image, ImageDraw

from .synthetic_grader import COLOURS, COUNTS, NUMBER_WORDS, SHAPES, make_record

BACKGROUND = (255, 255, 255)
NUMBERS = range(2, 60)  # amounts and temperatures: each a whole token of a locally trained tokenizer


# ------------------------------------------------------------------------------------------
# Families: each returns the raw ScienceQA fields, an image spec, and what the record holds:
# "neutral" (its starting thoughts), "facts" (true fact sentences), "wrong" (wrong versions of
# those facts, for the corrupted golds), "conclusion".
# ------------------------------------------------------------------------------------------


def _pick_choices(rng: random.Random, answer: str, pool: list[str], n: int) -> tuple[list[str], int]:
    others = [x for x in pool if x != answer]
    choices = rng.sample(others, n - 1) + [answer]
    rng.shuffle(choices)
    return choices, choices.index(answer)


def _fixed_choices(answer: str, pool: list[str]) -> tuple[list[str], int]:
    """All options in a fixed order (as many ScienceQA question types list them): the letter then
    follows from the answer itself, which keeps the visual signal learnable by a tiny model."""
    return list(pool), pool.index(answer)


def _shape_object(rng: random.Random, shape: str, colour: str) -> dict:
    return {"shape": shape, "colour": colour, "cx": round(0.5 + rng.uniform(-0.06, 0.06), 3),
            "cy": round(0.5 + rng.uniform(-0.06, 0.06), 3), "r": round(rng.uniform(0.3, 0.36), 3)}


IMAGE_CAPTION = "A picture of a shape on a white background."


def family_colour(rng: random.Random) -> dict:
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    choices, answer = _fixed_choices(colour, list(COLOURS))
    return {
        "question": "What colour is the shape?", "choices": choices, "answer": answer, "hint": "",
        "objects": [_shape_object(rng, shape, colour)], "caption": IMAGE_CAPTION,
        "subject": "natural science", "topic": "physics", "category": "Colours of objects",
        "skill": "Identify the colour of a shape",
        "lecture": "Light that bounces off an object reaches your eyes. The colour you see is the part of "
                   "that light the object does not absorb. Flat shapes have one colour all over.",
        "neutral": ["Look at the colour of the shape in the picture.", "Colour is how an object looks in light."],
        "facts": [f"The {shape} in the picture is {colour}."],
        "wrong": [f"The {shape} in the picture is {c}." for c in COLOURS if c != colour],
        "conclusion": f"So the answer is {colour}.",
        "record_facts": {"colour": colour, "shape": shape, "count": 1}, "answer_text": colour,
    }


def family_shape(rng: random.Random) -> dict:
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    choices, answer = _fixed_choices(shape, list(SHAPES))
    return {
        "question": "Which word names the shape in the picture?", "choices": choices, "answer": answer, "hint": "",
        "objects": [_shape_object(rng, shape, colour)], "caption": IMAGE_CAPTION,
        "subject": "language science", "topic": "vocabulary", "category": "Words for shapes",
        "skill": "Name a shape from a picture",
        "lecture": "A noun is a word that names a person, place, animal or thing. Shapes have names too. "
                   "The number of corners and sides tells you which name fits.",
        "neutral": ["Look at the outline of the shape in the picture.", "A word that names a shape is a noun."],
        "facts": [f"The shape in the picture is a {shape}."],
        "wrong": [f"The shape in the picture is a {s}." for s in SHAPES if s != shape],
        "conclusion": f"So the answer is {shape}.",
        "record_facts": {"colour": colour, "shape": shape, "count": 1}, "answer_text": shape,
    }


GRID = [(x, y) for y in (0.2, 0.5, 0.8) for x in (0.2, 0.5, 0.8)]


def _there_are(n: int) -> str:
    word = next(k for k, v in NUMBER_WORDS.items() if v == n)
    return f"There {'is' if n == 1 else 'are'} {word} {'circle' if n == 1 else 'circles'} in the picture."


def family_count(rng: random.Random) -> dict:
    colour, count = rng.choice(list(COLOURS)), rng.choice(COUNTS)
    cells = rng.sample(GRID, count)
    objects = [{"shape": "circle", "colour": colour, "cx": round(x + rng.uniform(-0.04, 0.04), 3),
                "cy": round(y + rng.uniform(-0.04, 0.04), 3), "r": 0.14} for x, y in cells]
    choices, answer = _fixed_choices(str(count), [str(c) for c in COUNTS])
    return {
        "question": "How many circles are there?", "choices": choices, "answer": answer, "hint": "",
        "objects": objects, "caption": "A picture of circles on a white background.",
        "subject": "social science", "topic": "economics", "category": "Counting goods",
        "skill": "Count objects in a picture",
        "lecture": "Shops and markets count the goods they have. To count objects, point at each one and "
                   "say the next number. The last number you say is how many there are.",
        "neutral": ["Count each circle once.", "It helps to count from left to right."],
        "facts": [_there_are(count)],
        "wrong": [_there_are(c) for c in COUNTS if c != count],
        "conclusion": f"So the answer is {count}.",
        "record_facts": {"colour": colour, "shape": "circle", "count": count}, "answer_text": str(count),
    }


THINGS = [("a cup of tea", "tea"), ("a glass of juice", "juice"), ("a bowl of soup", "soup"),
          ("a glass of milk", "milk"), ("a mug of cocoa", "cocoa"), ("a jar of honey", "honey")]


def family_temperature(rng: random.Random) -> dict:
    (long_a, a), (long_b, b) = rng.sample(THINGS, 2)
    ta, tb = rng.sample(NUMBERS, 2)
    hotter = rng.random() < 0.5
    hot, cold = (a, b) if ta > tb else (b, a)
    winner, loser = (hot, cold) if hotter else (cold, hot)
    choices, answer = _pick_choices(rng, winner, [a, b], 2)
    wrong_t = [t for t in NUMBERS if t not in (ta, tb)]
    return {
        "question": f"Which object is {'hotter' if hotter else 'colder'}?", "choices": choices, "answer": answer,
        "hint": f"{long_a[0].upper() + long_a[1:]} is at {ta}°C. {long_b[0].upper() + long_b[1:]} is at {tb}°C.",
        "objects": None, "caption": "",
        "subject": "natural science", "topic": "physics", "category": "Temperature",
        "skill": "Compare temperatures",
        "lecture": "Temperature tells you how hot or cold matter is. It is measured in degrees Celsius (°C). "
                   "The higher the temperature, the hotter the object.",
        "neutral": ["Compare the two temperatures in the hint.", "A higher temperature means a hotter object."],
        "facts": [f"The {a} is {ta}°C.", f"The {b} is {tb}°C."],
        "wrong": [f"The {a} is {tb}°C.", f"The {b} is {ta}°C.", f"The {a} is {rng.choice(wrong_t)}°C."],
        "conclusion": f"So the answer is {winner}.",
        "entities": [a, b], "values": {a: ta, b: tb}, "unit": "°C",
        "predicates": {"is hotter": [hot], "is warmer": [hot], "is colder": [cold], "is cooler": [cold]},
        "answer_text": winner,
    }


NAMES = ["Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Ivy", "Ben", "Noa", "Eli"]


def family_savings(rng: random.Random) -> dict:
    a, b = rng.sample(NAMES, 2)
    ma, mb = rng.sample(NUMBERS, 2)
    more = rng.random() < 0.5
    rich, poor = (a, b) if ma > mb else (b, a)
    winner = rich if more else poor
    choices, answer = _pick_choices(rng, winner, [a, b], 2)
    wrong_m = [m for m in NUMBERS if m not in (ma, mb)]
    return {
        "question": f"Who saved {'more' if more else 'less'} money?", "choices": choices, "answer": answer,
        "hint": f"{a} saved ${ma} this month. {b} saved ${mb} this month.",
        "objects": None, "caption": "",
        "subject": "social science", "topic": "economics", "category": "Saving and spending",
        "skill": "Compare amounts of money",
        "lecture": "People earn money and can choose to spend it or save it. Money that is saved can be "
                   "used later. A bigger amount saved means more money kept.",
        "neutral": ["Compare the two amounts in the hint.", "Saving means keeping money instead of spending it."],
        "facts": [f"{a} saved ${ma}.", f"{b} saved ${mb}."],
        "wrong": [f"{a} saved ${mb}.", f"{b} saved ${ma}.", f"{a} saved ${rng.choice(wrong_m)}."],
        "conclusion": f"So the answer is {winner}.",
        "entities": [x.lower() for x in (a, b)], "values": {a.lower(): ma, b.lower(): mb}, "unit": "$",
        "predicates": {"saved more": [rich.lower()], "saved less": [poor.lower()]},
        "answer_text": winner,
    }


ITEMS = ["kite", "hat", "ball", "cup", "bag", "boat"]


def family_reading(rng: random.Random) -> dict:
    name, item, colour = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(list(COLOURS))
    choices, answer = _fixed_choices(colour, list(COLOURS))
    return {
        "question": f"What colour is {name}'s {item}?", "choices": choices, "answer": answer,
        "hint": f"{name} has a {colour} {item}. {name} takes it to school every day.",
        "objects": None, "caption": "",
        "subject": "language science", "topic": "reading-comprehension", "category": "Read for details",
        "skill": "Find a detail in a text",
        "lecture": "A text often answers a question directly. Words that describe things, like colour "
                   "words, are adjectives. Find the sentence that names the thing the question asks about.",
        "neutral": ["Read the hint carefully.", "An adjective is a word that describes a noun."],
        "facts": [f"The hint says that {name} has a {colour} {item}."],
        "wrong": [f"The hint says that {name} has a {c} {item}." for c in COLOURS if c != colour],
        "conclusion": f"So the answer is {colour}.",
        "record_facts": {"colour": colour}, "refs": [name.lower(), item], "answer_text": colour,
    }


ANIMALS = {"can fly": ["eagle", "owl", "sparrow"], "lives in water": ["fish", "shark", "whale"]}
LAND_ANIMALS = ["dog", "cow", "horse", "cat", "goat"]
TRAIT = {"can fly": ("has wings and can fly", "can not fly"),
         "lives in water": ("lives in water", "does not live in water")}


def family_animals(rng: random.Random) -> dict:
    predicate = rng.choice(list(ANIMALS))
    answer_text = rng.choice(ANIMALS[predicate])
    pool = [answer_text] + LAND_ANIMALS + [a for p, xs in ANIMALS.items() if p != predicate for a in xs]
    choices, answer = _pick_choices(rng, answer_text, pool, 3)
    other = next(c for c in choices if c != answer_text)
    yes, no = TRAIT[predicate]
    entities = sorted({a for xs in ANIMALS.values() for a in xs} | set(LAND_ANIMALS))
    return {
        "question": "Which animal can fly?" if predicate == "can fly" else "Which animal lives in water?",
        "choices": choices, "answer": answer, "hint": "", "objects": None, "caption": "",
        "subject": "natural science", "topic": "biology", "category": "Animal traits",
        "skill": "Identify animals by their traits",
        "lecture": "Animals have traits that help them live where they do. Some animals have wings and "
                   "feathers. Some animals have fins and live their whole life in water.",
        "neutral": ["Think about how each animal moves.", "Think about where each animal lives."],
        "facts": [f"A {answer_text} {yes}.", f"A {other} {no}."],
        "wrong": [f"A {other} {yes}.", f"A {answer_text} {no}."],
        "conclusion": f"So the answer is {answer_text}.",
        "entities": entities, "predicates": {"can fly": ANIMALS["can fly"], "has wings": ANIMALS["can fly"],
                                             "lives in water": ANIMALS["lives in water"],
                                             "live in water": ANIMALS["lives in water"]},
        "answer_text": answer_text,
    }


PLACES = {"continent": ["asia", "africa", "europe"], "ocean": ["pacific", "atlantic", "arctic"],
          "city": ["paris", "tokyo", "cairo"]}


def _article(kind: str) -> str:
    return "an" if kind == "ocean" else "a"


def family_places(rng: random.Random) -> dict:
    kind = rng.choice(list(PLACES))
    answer_text = rng.choice(PLACES[kind])
    pool = [answer_text] + [x for k, xs in PLACES.items() if k != kind for x in xs]
    choices, answer = _pick_choices(rng, answer_text, pool, 3)
    other = next(c for c in choices if c != answer_text)
    other_kind = next(k for k, xs in PLACES.items() if other in xs)
    return {
        "question": f"Which of these is {_article(kind)} {kind}?", "choices": [c.title() for c in choices],
        "answer": answer, "hint": "", "objects": None, "caption": "",
        "subject": "social science", "topic": "geography", "category": "Places of the world",
        "skill": "Identify continents, oceans and cities",
        "lecture": "A continent is one of the seven large areas of land on Earth. An ocean is a very large "
                   "body of salt water. A city is a large town where many people live.",
        "neutral": ["Use what you know about the places of the world.", "Think about what each place is."],
        "facts": [f"{answer_text.title()} is {_article(kind)} {kind}.",
                  f"{other.title()} is {_article(other_kind)} {other_kind}."],
        "wrong": [f"{other.title()} is {_article(kind)} {kind}."],
        "conclusion": f"So the answer is {answer_text.title()}.",
        "entities": sorted(x for xs in PLACES.values() for x in xs),
        "predicates": {f"is {_article(k)} {k}": xs for k, xs in PLACES.items()},
        "answer_text": answer_text.title(),
    }


WORDS = ["apple", "bell", "cloud", "drum", "egg", "frog", "goat", "hill", "ink", "jam", "kite", "lamp",
         "moon", "nest", "owl", "pig", "queen", "rope", "sun", "tree", "vase", "wolf"]


def family_alphabet(rng: random.Random) -> dict:
    words = rng.sample(WORDS, 3)
    first = min(words)
    other = min(w for w in words if w != first)
    letters = sorted({w[0] for w in WORDS} - {w[0] for w in words})
    return {
        "question": "Which word would you find first in a dictionary?", "choices": list(words),
        "answer": words.index(first), "hint": "", "objects": None, "caption": "",
        "subject": "language science", "topic": "reference-skills", "category": "Alphabetical order",
        "skill": "Order words alphabetically",
        "lecture": "A dictionary lists words in alphabetical order. To put words in order, compare their "
                   "first letters. If the first letters match, compare the second letters.",
        "neutral": ["Words in a dictionary are in alphabetical order.", "Compare the first letters of the words."],
        "facts": [f"The word {first} starts with {first[0]}.", f"The word {other} starts with {other[0]}."],
        "wrong": [f"The word {first} starts with {rng.choice(letters)}.", f"The word {other} starts with {first[0]}."],
        "conclusion": f"So the answer is {first}.",
        "entities": list(WORDS), "predicates": {"comes first": [first], "is first": [first]},
        "starts_with": {w: w[0] for w in WORDS}, "answer_text": first,
    }


# 12 slots: image 50% (IMG), text 25% (TXT), knowledge 25% (NO); each subject in each kind.
SCHEDULE: list[Callable[[random.Random], dict]] = [
    family_colour, family_shape, family_count, family_colour, family_shape, family_count,
    family_temperature, family_savings, family_reading, family_animals, family_places, family_alphabet,
]
FAMILIES = {f.__name__.removeprefix("family_"): f for f in dict.fromkeys(SCHEDULE)}


def gold_rationale(rng: random.Random, p: dict, wrong_fact: bool) -> str:
    """A starting thought, the facts (one of them wrong when ``wrong_fact``), the conclusion."""
    facts = list(p["facts"])
    if wrong_fact:
        facts[rng.randrange(len(facts))] = rng.choice(p["wrong"])
    return " ".join([rng.choice(p["neutral"]), *facts, p["conclusion"]])


# ------------------------------------------------------------------------------------------
# Rendering and writing
# ------------------------------------------------------------------------------------------


def render_image(objects: list[dict], size: int):
    """Flat shapes on white; coordinates are fractions of the side so any size renders the same scene."""
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for o in objects:
        cx, cy, r, fill = o["cx"] * size, o["cy"] * size, o["r"] * size, COLOURS[o["colour"]]
        if o["shape"] == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif o["shape"] == "square":
            s = r * 0.88
            draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
        elif o["shape"] == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
        else:
            raise ValueError(f"unknown shape {o['shape']!r}")
    return img


def write_synthetic_scienceqa(out_dir: str | Path, n_train: int = 240, n_val: int = 48, n_test: int = 48,
                              image_size: int = 32, seed: int = 0, wrong_fact_rate: float = 0.0) -> Path:
    """Write a synthetic dataset in ScienceQA's original layout; returns ``out_dir``.

    ``wrong_fact_rate``: the share of train problems whose gold rationale states one wrong fact.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"aresnb-synthetic-{seed}")
    problems: dict[str, dict] = {}
    pid_splits: dict[str, list[str]] = {}
    captions: dict[str, str] = {}
    k = 0
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        # A shuffled repeating schedule (not i.i.d. draws) keeps every category populated even at n=12.
        families = (SCHEDULE * (n // len(SCHEDULE) + 1))[:n]
        grades = ([g for g in range(1, 13)] * (n // 12 + 1))[:n]
        rng.shuffle(families)
        rng.shuffle(grades)
        pid_splits[split] = []
        for family, grade in zip(families, grades):
            k += 1
            qid = f"s{k:05d}"
            p = family(rng)
            wrong = split == "train" and rng.random() < wrong_fact_rate
            has_image = bool(p.get("objects"))
            problems[qid] = {
                "question": p["question"], "choices": p["choices"], "answer": p["answer"], "hint": p["hint"],
                "image": "image.png" if has_image else None, "task": "closed choice", "grade": f"grade{grade}",
                "subject": p["subject"], "topic": p["topic"], "category": p["category"], "skill": p["skill"],
                "lecture": p["lecture"], "solution": gold_rationale(rng, p, wrong), "split": split,
                "image_record": json.dumps(make_record(p, family.__name__.removeprefix("family_")), sort_keys=True),
            }
            pid_splits[split].append(qid)
            if has_image:
                captions[qid] = p["caption"]
                path = out / "images" / split / qid / "image.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                render_image(p["objects"], image_size).save(path, format="PNG")
    _dump(out / "problems.json", problems)
    _dump(out / "pid_splits.json", pid_splits)
    _dump(out / "captions.json", {"captions": captions})
    return out


def _dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
