"""A tiny run in the paper's styles -- teacher.prompt_style and teacher.sentence_rules: paper, on the
Flan-T5 tokenizer the paper's sentence rules are written for -- through every stage's ``run`` (01-07),
against the local reference Teacher: the same tiny world as test_stages.py."""

import json
import sqlite3

import pandas as pd
import pytest

from aresnb.config import load_config
from aresnb.model.tokenizer import load_tokenizer
from aresnb.rl.rollouts import sentence_layout
from aresnb.teacher import paper_rubric, prompts
from aresnb.text.paper_sentences import T5Pieces

from conftest import run_every_stage, shared_path
from test_stages import N_TEST, TINY


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """Every stage, in order, on the paper styles: (cfg, paths, summaries by stage)."""
    flan_t5 = shared_path("tokenizers", "flan-t5")
    out = tmp_path_factory.mktemp("tiny_paper_run")
    cfg = load_config(None, [f"run.output_dir={out}", "run.name=tiny_paper", f"teacher.cache_path={out / 'cache.sqlite'}",
                             *TINY, f"model.tokenizer={flan_t5}", "teacher.prompt_style=paper",
                             "teacher.sentence_rules=paper",
                             # 32,100 pieces: the tiny model needs more steps before its samples end sentences
                             "baseline.epochs=40", "baseline.lr=1e-2", "rollout.temperature=0.7",
                             "rollout.max_new_tokens=32"])
    paths, done = run_every_stage(cfg)
    return cfg, paths, done


def test_every_stage_completes_in_the_paper_styles(paper_run):
    cfg, paths, done = paper_run
    assert done["02"]["tokenizer"]["vocab_size"] == 32100  # the Flan-T5 tokenizer, not a trained BPE
    s03 = done["03"]
    assert s03["teacher"]["prompt_style"] == "paper" and s03["teacher"]["sentence_rules"] == "paper"
    assert s03["scored"] + s03["dropped"] == s03["samples"] and not s03["teacher"]["errors"]
    assert done["04"]["optimizer_steps"] == done["04"]["expected_optimizer_steps"] > 0
    s05 = done["05"]
    assert s05["corrected"] + s05["unchanged"] + s05["fallback"] == s05["n_problems"] > 0
    assert set(done["06"]["accuracy"]) == {"baseline", "ares"}
    assert done["07"]["counts"]["n"] == N_TEST


def test_stage_03_keeps_the_papers_sentences_and_their_end_tokens(paper_run):
    cfg, paths, _ = paper_run
    tok = load_tokenizer(paths.baseline_model_dir)
    pieces = T5Pieces.of(tok)
    df = pd.read_parquet(paths.samples_file(1))
    for r in df.to_dict("records"):
        ids = [int(t) for t in r["response_ids"]]
        again = sentence_layout(tok, {"rationale": r["rationale"], "response_ids": ids}, "paper")
        assert [list(x) for x in r["sentence_spans"]] == again["sentence_spans"]
        assert list(r["sentence_end_tokens"]) == again["sentence_end_tokens"]
        assert list(r["sentences"]) == again["sentences"]
        for e in r["sentence_end_tokens"]:  # every reward sits on a terminal piece, a "." or </s>
            assert ids[e] in pieces.terminals | {pieces.period, pieces.eos}
        if not r["dropped"]:
            assert len(r["scores"]) == len(r["sentences"])


def test_the_teacher_got_the_papers_requests_and_the_judge_its_own(paper_run):
    cfg, _, _ = paper_run
    with sqlite3.connect(cfg.teacher.cache_path) as db:
        asked = [(kind, json.loads(request)["messages"][0]["content"])
                 for kind, request in db.execute("SELECT kind, request FROM replies")]
    systems = {kind: {s for k, s in asked if k == kind} for kind in ("score", "correct", "judge")}
    assert systems["score"] == {paper_rubric.SCORE_SYSTEM} and systems["correct"] == {paper_rubric.CORRECT_SYSTEM}
    assert systems["judge"] == {prompts.JUDGE_SYSTEM}
