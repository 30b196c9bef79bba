"""The reference Teacher's rubric and its judge on hand-written rationales.

These are fixed before the task or the model are tuned and are never moved toward the method
under test: saying less must not pay (a fragment or an unanchored conclusion scores low), wrong
specifics score 0, and the judge's criteria are its own, not the mean of the reward.
"""

import json

import pytest

from aresnb.data.synthetic import (family_colour, family_savings, family_temperature)
from aresnb.data.synthetic_grader import FALSE, NEUTRAL, TRUE, UNVERIFIABLE, grade_sentence, make_record
from aresnb.teacher.problem import ProblemView
from aresnb.teacher.reference import RUBRIC, ReferenceTeacher


def view(p: dict, family: str, solution: str = "") -> ProblemView:
    return ProblemView(qid=family, question=p["question"], choices=tuple(p["choices"]), answer=p["answer"],
                       hint=p["hint"], solution=solution, image_record=json.dumps(make_record(p, family)))


class FixedRng:
    """Draws that make the hand-written families below what their sentences say."""

    def __init__(self, picks):
        self.picks = list(picks)

    def choice(self, xs):
        return self.picks.pop(0) if self.picks and self.picks[0] in xs else xs[0]

    def sample(self, xs, k):
        out = []
        for _ in range(k):
            x = self.choice([y for y in xs if y not in out])
            out.append(x)
        return out

    def random(self):
        return 0.1

    def uniform(self, a, b):
        return a

    def randint(self, a, b):
        return a

    def randrange(self, n):
        return 0

    def shuffle(self, xs):
        pass


def savings():
    # Ava saved $34, Leo $21; "Who saved more money?" -> Ava
    p = family_savings(FixedRng(["Ava", "Leo", 34, 21]))
    assert p["hint"] == "Ava saved $34 this month. Leo saved $21 this month." and p["answer_text"] == "Ava"
    return p, view(p, "savings")


def temperature():
    p = family_temperature(FixedRng([("a cup of tea", "tea"), ("a glass of milk", "milk"), 34, 21]))
    assert p["question"] == "Which object is hotter?" and p["answer_text"] == "tea"
    return p, view(p, "temperature")


def colour():
    p = family_colour(FixedRng(["red", "square"]))
    assert p["answer_text"] == "red"
    return p, view(p, "colour")


@pytest.mark.parametrize("make, sentence, score", [
    # the facts and conclusions of the problem
    (savings, "Ava saved $34.", RUBRIC["true_about_answer"]),
    (savings, "Leo saved $21.", RUBRIC["true_specific"]),
    (savings, "Ava saved $21.", 0.0),  # a wrong hint-specific fact
    (savings, "So the answer is Ava.", 1.0),
    (savings, "So the answer is Leo.", 0.0),  # a conclusion naming the wrong option
    (savings, "So the answer is less.", 0.0),  # a conclusion naming no option
    (savings, "So Ava saved less money than Ava.", 0.0),  # a self-comparison
    (savings, "Compare the two amounts in the hint.", 0.5),  # a recorded starting thought
    (savings, "Ava.", RUBRIC["unverifiable"]),  # a fragment without a claim scores low
    (savings, "Money is money.", RUBRIC["unverifiable"]),
    (temperature, "The tea is 34°C.", 1.0),
    (temperature, "The milk is 34°C.", 0.0),
    (temperature, "So the answer is colder.", 0.0),
    (temperature, "The tea is hotter than the milk.", 1.0),
    (temperature, "The tea is hotter than the tea.", 0.0),
    (colour, "The square in the picture is red.", 1.0),
    (colour, "The square in the picture is blue.", 0.0),
    (colour, "So the answer is purple.", 0.0),  # a non-option
    (colour, "So the answer is red.", 1.0),
    (colour, "Look at the colour of the shape in the picture.", 0.5),
    (colour, "The picture.", RUBRIC["unverifiable"]),
])
def test_rubric_scores(make, sentence, score):
    _, problem = make()
    assert ReferenceTeacher([problem]).sentence_scores(problem, [sentence]) == [score]


def test_saying_less_does_not_pay():
    """Dropping the checkable facts lowers the mean; a fragment-only rationale is worse than a full one."""
    _, problem = savings()
    ref = ReferenceTeacher([problem])
    full = ref.sentence_scores(problem, ["Compare the two amounts in the hint.", "Ava saved $34.", "Leo saved $21.",
                                         "So the answer is Ava."])
    bare = ref.sentence_scores(problem, ["So the answer is Ava."])
    hedge = ref.sentence_scores(problem, ["Ava.", "So the answer is less."])
    assert sum(s - 0.5 for s in full) > sum(s - 0.5 for s in bare) > 0 > sum(s - 0.5 for s in hedge)


def test_repeats_score_zero():
    _, problem = savings()
    assert ReferenceTeacher([problem]).sentence_scores(problem, ["Ava saved $34.", "Ava saved $34."]) == [1.0, 0.0]


def test_every_family_grades_its_own_sentences():
    import random

    from aresnb.data.synthetic import FAMILIES

    rng = random.Random(0)
    for name, family in FAMILIES.items():
        for _ in range(50):
            p = family(rng)
            rec = make_record(p, name)
            assert {grade_sentence(s, rec) for s in p["neutral"]} == {NEUTRAL}, name
            assert {grade_sentence(s, rec) for s in [*p["facts"], p["conclusion"]]} == {TRUE}, name
            assert {grade_sentence(s, rec) for s in p["wrong"]} == {FALSE}, name
            assert grade_sentence("zz qq.", rec) == UNVERIFIABLE


# ---- the judge: its own criteria, a forced choice ---------------------------------------------


GOOD = "Compare the two amounts in the hint. Ava saved $34. Leo saved $21. So the answer is Ava."


@pytest.mark.parametrize("better, worse, why", [
    (GOOD, "Compare the two amounts in the hint. Ava saved $34. Leo saved $21. So the answer is Leo.",
     "names the correct option"),
    ("So the answer is Ava.", "Ava saved $34. Leo saved $21. So the answer is Leo.",
     "the correct option first, before more true claims"),
    (GOOD, "Compare the two amounts in the hint. Ava saved $21. Leo saved $21. So the answer is Ava.",
     "fewer false claims"),
    ("Ava saved $34. So the answer is Ava.", "Ava saved $34. Ava saved $34. So the answer is Ava.",
     "without repetition"),
    ("Ava saved $34. So the answer is Ava.", "Ava saved $34. Leo saved $5. So the answer is Ava.",
     "fewer false claims beat more claims"),
    (GOOD, "Compare the two amounts in the hint. So the answer is Ava.", "more true claims"),
])
def test_judge_prefers_by_its_own_criteria_in_both_orders(better, worse, why):
    _, problem = savings()
    ref = ReferenceTeacher([problem])
    assert ref.judge(problem, better, worse) == "A", why
    assert ref.judge(problem, worse, better) == "B", why


def test_judge_is_not_the_mean_reward():
    """A short correct rationale has the higher mean score; the judge still prefers the full one."""
    _, problem = savings()
    ref = ReferenceTeacher([problem])
    short = "Ava saved $34. So the answer is Ava."
    mean = lambda t: sum(ref.sentence_scores(problem, t.split(". "))) / len(t.split(". "))  # noqa: E731
    assert mean(short) > mean(GOOD)
    assert ref.judge(problem, short, GOOD) == "B"


def test_judge_forced_choice_on_equals_is_positional():
    _, problem = savings()
    ref = ReferenceTeacher([problem])
    assert ref.judge(problem, GOOD, GOOD) == "A" and ref.judge(problem, "x.", "y.") == "A"


# ---- corrections ----------------------------------------------------------------------------


def test_correction_fixes_wrong_facts_from_the_record_and_drops_fragments():
    _, problem = savings()
    ref = ReferenceTeacher([problem])
    fixed = ref.correct(problem, "Compare the two amounts in the hint. Ava saved $21. Ava. Leo saved $21. "
                                 "So the answer is Leo.")
    assert fixed == "Compare the two amounts in the hint. Ava saved $34. Leo saved $21. So the answer is Ava."
    assert ref.correct(problem, "Ava saved $34. Leo saved") == "Ava saved $34. So the answer is Ava."
    assert all(ref.sentence_scores(problem, fixed.split(". ")))


def test_real_data_keeps_overlap_scoring_with_the_same_conclusion_check():
    problem = ProblemView(qid="r1", question="Which is a mammal?", choices=("shark", "dog"), answer=1,
                          solution="A dog feeds its young milk. A shark is a fish.")
    ref = ReferenceTeacher([problem])
    s = ref.sentence_scores(problem, ["A dog feeds its young milk.", "So the answer is shark.",
                                      "So the answer is dog.", "So the answer is warm.", "The answer is (B)."])
    assert s[0] == 1.0 and s[1] == 0.0 and s[2] == 1.0 and s[3] == 0.0 and s[4] == 1.0


def test_a_true_fact_that_bears_on_no_option_is_indirect():
    from aresnb.data.synthetic import family_places

    p = family_places(FixedRng(["city", "paris"]))
    problem = view(p, "places")
    other_city = next(c for c in ("tokyo", "cairo") if c.title() not in p["choices"])
    ref = ReferenceTeacher([problem])
    s = ref.sentence_scores(problem, [f"{other_city.title()} is a city.", "Paris is a city.",
                                      "Paris is a continent."])
    assert s == [0.5, 1.0, 0.0]  # true but indirect; true and names the answer; false
    padded = f"Paris is a city. {other_city.title()} is a city. So the answer is Paris."
    assert ref.judge(problem, padded, "Paris is a city. So the answer is Paris.") == "A"  # a tie: positional
    assert ref.judge(problem, "Paris is a city. So the answer is Paris.", padded) == "A"
