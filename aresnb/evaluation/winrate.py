"""Win rate of ARES over the baseline, as judged: verdicts -> outcomes -> rates and intervals.

The same definitions serve every comparison the judge makes (an ablation arm against the
baseline, ARES against ``correction_only``): "ARES" is then the compared model (the *subject*)
and "the baseline" the model it is compared with (the *reference*); ``PairVerdict.names`` says which.

Definitions (used by every table and figure that shows a win rate):
- The headline, the paper's protocol: each test problem is shown once, its two rationales in a
  seeded random order as Option A / Option B, and the judge picks one (a forced choice).
  ``win_rate`` = share of problems whose pick is ARES (``single_order_win_rate`` in ``tally``).
- Beside it, both orders: each problem is asked again with the order swapped. An item is a
  **win** for ARES only when the judge prefers ARES in both orders, a **loss** only when it
  prefers the baseline in both; every other item is a **tie** -- inconsistent verdicts across the
  two orders (a judge that cannot separate them and picks a position), both "tie" verdicts, or a
  reply that could not be used. ``both_orders_win_rate`` = wins / items; ``decisive_win_rate`` =
  wins / (wins + losses), ties left out.
- Intervals: percentile bootstrap over items (seeded), 95%.
- Position bias: with the swap each item shows ARES once as Option A and once as Option B; the
  share of decisive verdicts that pick Option A is 0.5 for a judge without position bias.
  ``consistency_rate`` = share of items whose two verdicts name the same winner (or both tie).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from aresnb.paper_numbers import CATEGORIES
from aresnb.teacher import JudgeItem, ProblemView

OUTCOME_CODE = {"win": 1, "tie": 0, "loss": -1}


def side_of(choice: str | None, ares_is_a: bool) -> str:
    """Which side a verdict picks: 'ares', 'baseline', 'tie', or 'invalid' (no usable reply)."""
    c = (choice or "").strip().lower()
    if c == "tie":
        return "tie"
    if c == "a":
        return "ares" if ares_is_a else "baseline"
    if c == "b":
        return "baseline" if ares_is_a else "ares"
    return "invalid"


@dataclass(frozen=True)
class PairVerdict:
    """The judge's two verdicts on one problem. ``first``/``second``: 'A' | 'B' | 'tie' | None.

    ``names``: (subject, reference), the models' names that ``sides`` reports; ("ares", "baseline")
    for the headline comparison."""

    qid: str
    ares_first: bool  # the subject (ARES) was Option A in the first ask (and Option B in the swapped ask)
    first: str | None
    second: str | None
    names: tuple[str, str] = ("ares", "baseline")

    @property
    def sides(self) -> tuple[str, str]:
        return self._named(side_of(self.first, self.ares_first)), self._named(side_of(self.second, not self.ares_first))

    def _named(self, side: str) -> str:
        return {"ares": self.names[0], "baseline": self.names[1]}.get(side, side)

    @property
    def consistent(self) -> bool:
        s1, s2 = self.sides
        return s1 == s2 and s1 != "invalid"

    @property
    def outcome(self) -> str:
        s1, s2 = self.sides
        if s1 == s2 == self.names[0]:
            return "win"
        if s1 == s2 == self.names[1]:
            return "loss"
        return "tie"


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def tally(verdicts: Sequence[PairVerdict]) -> dict[str, Any]:
    """Counts, win rates, consistency and position-bias figures of a set of verdicts."""
    n = len(verdicts)
    outcomes = [v.outcome for v in verdicts]
    wins, losses, ties = outcomes.count("win"), outcomes.count("loss"), outcomes.count("tie")
    sides = [v.sides for v in verdicts]
    both_tie = sum(1 for s in sides if s == ("tie", "tie"))
    invalid_items = sum(1 for s in sides if "invalid" in s)
    # every ask: (choice, ARES shown as A?)
    asks = [(v.first, v.ares_first) for v in verdicts] + [(v.second, not v.ares_first) for v in verdicts]
    letters = [(c or "").strip().lower() for c, _ in asks]
    n_a, n_b, n_tie = letters.count("a"), letters.count("b"), letters.count("tie")
    ares_when_a = sum(1 for c, a in asks if a and side_of(c, a) == "ares")
    ares_when_b = sum(1 for c, a in asks if not a and side_of(c, a) == "ares")
    # the subject's pick in the first (paper-protocol) ask, by role whatever the models' names
    first_sides = [side_of(v.first, v.ares_first) for v in verdicts]
    return {
        "n": n,
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "ties_both_tie": both_tie,
        "ties_inconsistent": ties - both_tie,
        "items_with_invalid_verdict": invalid_items,
        "both_orders_win_rate": _ratio(wins, n),
        "tie_rate": _ratio(ties, n),
        "loss_rate": _ratio(losses, n),
        "decisive_win_rate": _ratio(wins, wins + losses),
        "single_order_win_rate": _ratio(first_sides.count("ares"), n),
        "single_order": {"ares": first_sides.count("ares"), "baseline": first_sides.count("baseline"),
                         "tie_or_invalid": n - first_sides.count("ares") - first_sides.count("baseline")},
        "consistency_rate": _ratio(sum(v.consistent for v in verdicts), n),
        "position": {
            "asks": len(asks),
            "chose_A": n_a,
            "chose_B": n_b,
            "chose_tie": n_tie,
            "invalid": len(asks) - n_a - n_b - n_tie,
            # 0.5 = no position bias; above 0.5 the judge favours whatever is shown first.
            "share_A_of_decisive": _ratio(n_a, n_a + n_b),
            "ares_preferred_when_A": _ratio(ares_when_a, n),
            "ares_preferred_when_B": _ratio(ares_when_b, n),
        },
    }


def bootstrap_interval(outcomes: Sequence[int] | np.ndarray, n_samples: int, seed: int,
                       level: float = 0.95) -> dict[str, list[float | None]]:
    """Percentile bootstrap over items of win_rate and decisive_win_rate; outcomes in {1, 0, -1}."""
    o = np.asarray(outcomes, dtype=np.int8)
    if o.size == 0:
        return {"win_rate": [None, None], "decisive_win_rate": [None, None]}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, o.size, size=(n_samples, o.size))
    draws = o[idx]
    wins = (draws == 1).sum(axis=1)
    decided = wins + (draws == -1).sum(axis=1)
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    win_rate = np.quantile(wins / o.size, q)
    decisive = wins[decided > 0] / decided[decided > 0]
    dec = np.quantile(decisive, q) if decisive.size else [None, None]
    return {"win_rate": [float(x) for x in win_rate],
            "decisive_win_rate": [None if x is None else float(x) for x in dec]}


def single_order_codes(verdicts: Sequence[PairVerdict]) -> list[int]:
    """The paper-protocol outcome per item: 1 = the judge picked ARES (the subject), -1 = the
    baseline (the reference), 0 = neither."""
    return [{"ares": 1, "baseline": -1}.get(side_of(v.first, v.ares_first), 0) for v in verdicts]


def win_statistics(verdicts: Sequence[PairVerdict], n_samples: int, seed: int) -> dict[str, Any]:
    """What a win rate is made of, for one comparison: wins / ties / losses over both orders, the tie
    rate, the decisive win rate (ties left out) and the paper-protocol forced-choice win rate
    (``win_rate``: one random order, the judge must pick), each rate with its 95% interval over items.
    With many ties the forced choice is about 50% plus half the decisive margin: read all three."""
    t = tally(verdicts)
    both = bootstrap_interval([OUTCOME_CODE[v.outcome] for v in verdicts], n_samples, seed)
    forced = bootstrap_interval(single_order_codes(verdicts), n_samples, seed)
    return {
        "subject": verdicts[0].names[0] if verdicts else None,
        "reference": verdicts[0].names[1] if verdicts else None,
        "n": t["n"], "wins": t["wins"], "ties": t["ties"], "losses": t["losses"],
        "tie_rate": t["tie_rate"],
        "decisive_win_rate": t["decisive_win_rate"], "decisive_win_rate_ci95": both["decisive_win_rate"],
        "win_rate": t["single_order_win_rate"], "win_rate_ci95": forced["win_rate"],
        "both_orders_win_rate": t["both_orders_win_rate"],
        "consistency_rate": t["consistency_rate"],
        "items_with_invalid_verdict": t["items_with_invalid_verdict"],
    }


def win_rate_table(verdicts: Sequence[PairVerdict], categories_of: Mapping[str, Iterable[str]],
                   n_samples: int, seed: int, words: Mapping[str, tuple[int, int]] | None = None) -> pd.DataFrame:
    """One row for all items, then one per category that has items: the paper-protocol win rate
    with its 95% interval, the both-orders counts and decisive rate, and, given ``words``
    ({qid: (baseline words, ARES words)}), both sides' mean length."""
    groups = {"All": list(verdicts)}
    for cat in CATEGORIES:
        members = [v for v in verdicts if cat in set(categories_of.get(v.qid, ()))]
        if members:
            groups[cat] = members
    rows = []
    for k, (name, members) in enumerate(groups.items()):
        t = tally(members)
        single = bootstrap_interval(single_order_codes(members), n_samples, seed + k)
        both = bootstrap_interval([OUTCOME_CODE[v.outcome] for v in members], n_samples, seed + k)
        rows.append({
            "group": name, "n": t["n"],
            "win_rate": t["single_order_win_rate"], "win_rate_lo": single["win_rate"][0],
            "win_rate_hi": single["win_rate"][1],
            "wins": t["wins"], "ties": t["ties"], "losses": t["losses"], "ties_inconsistent": t["ties_inconsistent"],
            "decisive_win_rate": t["decisive_win_rate"],
            "decisive_lo": both["decisive_win_rate"][0], "decisive_hi": both["decisive_win_rate"][1],
            "consistency_rate": t["consistency_rate"],
        })
        if words is not None:
            rows[-1]["baseline_words"] = float(np.mean([words[v.qid][0] for v in members]))
            rows[-1]["ares_words"] = float(np.mean([words[v.qid][1] for v in members]))
    return pd.DataFrame(rows)


# ---- asking the judge ----------------------------------------------------------------------


def assign_orders(qids: Sequence[str], seed: int) -> dict[str, bool]:
    """Seeded random order per item: True when ARES is Option A in the first ask."""
    ordered = sorted(qids)
    flips = np.random.default_rng(seed).random(len(ordered)) < 0.5
    return {q: bool(f) for q, f in zip(ordered, flips)}


def judge_subset(problems: Sequence[Mapping[str, Any]], max_n: int | None, seed: int) -> list:
    """At most ``max_n`` problems (seeded, in their original order); all when max_n is None."""
    if max_n is None or max_n >= len(problems):
        return list(problems)
    keep = np.random.default_rng(seed).choice(len(problems), max_n, replace=False)
    return [problems[i] for i in sorted(keep)]


# judge(list of (problem row, option A text, option B text)) -> objects with .choice / .raw_reply
JudgeFn = Callable[[list[tuple[Mapping[str, Any], str, str]]], list[Any]]


def judge_both_orders(judge: JudgeFn, problems: Sequence[Mapping[str, Any]], baseline: Mapping[str, str],
                      ares: Mapping[str, str], seed: int,
                      names: tuple[str, str] = ("ares", "baseline")) -> tuple[list[PairVerdict], list[dict]]:
    """Ask the judge about every problem in a seeded random order and swapped; one batch of 2N asks.

    ``ares`` is the subject's rationales, ``baseline`` the reference's, ``names`` their models' names.
    Returns the verdicts and one record per problem (both raw replies) for judgments.jsonl.
    """
    orders = assign_orders([p["qid"] for p in problems], seed)
    asks = []
    for p in problems:
        first = (ares[p["qid"]], baseline[p["qid"]]) if orders[p["qid"]] else (baseline[p["qid"]], ares[p["qid"]])
        asks.append((p, *first))
        asks.append((p, first[1], first[0]))
    results = judge(asks)
    if len(results) != len(asks):
        raise RuntimeError(f"judge returned {len(results)} verdicts for {len(asks)} requests")
    verdicts, records = [], []
    for i, p in enumerate(problems):
        r1, r2 = results[2 * i], results[2 * i + 1]
        v = PairVerdict(str(p["qid"]), orders[p["qid"]], r1.choice, r2.choice, tuple(names))
        verdicts.append(v)
        fields = asdict(v)
        if v.names == ("ares", "baseline"):
            fields.pop("names")  # the headline's records stay as they always were
        else:
            fields["names"] = list(v.names)
        records.append({**fields, "outcome": v.outcome, "consistent": v.consistent,
                        "sides": list(v.sides), "raw_first": r1.raw_reply, "raw_second": r2.raw_reply,
                        "error_first": getattr(r1, "detail", None), "error_second": getattr(r2, "detail", None)})
    return verdicts, records


def teacher_judge(teacher: Any, progress: Callable[[int, int], None] | None = None) -> JudgeFn:
    """Adapt ``aresnb.teacher`` (JudgeItem in, JudgeResult out) to :data:`JudgeFn`; ``progress``
    gets (done, total) as replies arrive."""

    def judge(asks):
        return teacher.judge([JudgeItem(ProblemView.from_row(p), a, b) for p, a, b in asks], progress=progress)

    return judge
