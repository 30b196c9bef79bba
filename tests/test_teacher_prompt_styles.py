"""teacher.prompt_style: the aresnb requests pinned byte for byte, the paper's requests carrying every
element of ARES's, the same reply schema, the reference Teacher answering both, and the style in the
cache key (through the messages, which the key hashes in full)."""

import asyncio
import hashlib
import json

from aiohttp import web

from aresnb.teacher import ProblemView, ReplyCache, prompts
from aresnb.teacher.cache import cache_key, request_record
from aresnb.teacher.client import AsyncTeacher
from aresnb.teacher.endpoints import at_url
from aresnb.teacher.items import CorrectionItem, ScoreItem
from aresnb.teacher.paper_rubric import CORRECT_SYSTEM, SCORE_SYSTEM
from aresnb.teacher.reference import ReferenceTeacher
from aresnb.teacher.server import FaultPlan, TeacherServer

PROBLEM = ProblemView(qid="q1", question="Which  object is\na magnet?", choices=("a nail", "a bar magnet"), answer=1,
                      hint="Look at the\npicture.", caption="A red bar.",
                      solution="A bar magnet attracts iron. So the answer is a bar magnet.")
SENTS = ["It is red.", "So the answer is (B)."]
IMAGE = "data:image/png;base64,AAAA"


def digest(messages) -> str:
    return hashlib.sha256(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def test_aresnb_style_requests_are_byte_identical_to_before_the_styles():
    """The smoke run's requests (and so its cache keys) did not move: digests taken before
    prompt_style existed."""
    assert digest(prompts.score_messages(PROBLEM, SENTS, IMAGE)) == \
        "d52006d3dbae673ba3b221eafcf6184b4c0bd40c49662de446d058eceade2e78"
    assert digest(prompts.correct_messages(PROBLEM, "It is  red. So the answer is (B).", None)) == \
        "9c70a2ba95f205fb59e9a05307710c1bda9bf63df344adaafaad459213b309a0"
    assert digest(prompts.judge_messages(PROBLEM, "It is red.", "It is blue.", IMAGE)) == \
        "b2f9d4df9ef53626377082669d99be8fdf21d34272288c7f67e287a00fc89252"
    assert prompts.score_messages(PROBLEM, SENTS, IMAGE, "aresnb") == prompts.score_messages(PROBLEM, SENTS, IMAGE)
    keys = list(prompts.sentences_object(SENTS))
    record = request_record("reference", prompts.PROMPT_VERSION, prompts.score_messages(PROBLEM, SENTS, IMAGE), 0.0,
                            prompts.response_format("json_schema", "score", prompts.score_schema(keys)))
    assert cache_key(record) == "66f1e2674df579dcbf2329eec8e3b6a227e2acf5b329facf24158e532b328bd8"


def test_paper_scoring_request_carries_every_element_of_the_papers():
    msgs = prompts.score_messages(PROBLEM, SENTS, IMAGE, "paper")
    system, user = msgs[0]["content"], msgs[1]["content"][0]["text"]
    for element in ("question, its options, a hint, the correct answer", "its image", "JSON object",
                    "from 0.0 to 1.0, in\nsteps of 0.1", "starting point of thought", "process of elimination",
                    "true\nstatements", "completely incorrect", "0.5 means a neutral sentence",
                    "initial thought process", "guide later guesses towards the answer", "correct or relevant",
                    "repeats one that appeared before it, give it 0.0", "return only the JSON object"):
        assert element in system, element
    # the data as the paper sends it: raw question and hint (line breaks kept, no caption), the
    # options as a list, the answer as its text
    assert user.startswith("Question: Which  object is\na magnet?\nOptions: [\"a nail\", \"a bar magnet\"]\n"
                           "Hint: Look at the\npicture.\nAnswer: a bar magnet\n")
    assert "A red bar" not in user and "(B)" not in user.split("Reasoning")[0]
    obj = json.loads(user.split("Reasoning to score (JSON): ", 1)[1])
    assert obj == prompts.sentences_object(SENTS)  # the same keys and placeholders: the same reply schema
    assert msgs[1]["content"][1] == {"type": "image_url", "image_url": {"url": IMAGE}}
    fields = prompts.parse_request(msgs)
    assert prompts.request_kind(msgs) == "score" and fields["sentences"] == SENTS and fields["hint"] == PROBLEM.hint
    assert (fields["options"], fields["answer"]) == (PROBLEM.options_text, PROBLEM.answer_text)


def test_paper_correction_request_has_the_seven_rules():
    msgs = prompts.correct_messages(PROBLEM, "It is  red. So the answer", None, "paper")
    system = msgs[0]["content"]
    rules = [line for line in system.splitlines() if line[:2] in {f"{i}." for i in range(1, 10)}]
    assert [r[:2] for r in rules] == ["1.", "2.", "3.", "4.", "5.", "6.", "7."]
    text = " ".join(system.split())
    for element in ("correct for the given answer", "without any alteration", "starting point of thought",
                    "grammatical errors and incomplete sentences", "not your own knowledge",
                    "wrong for the given answer, without removing it", "the options, the hint and the answer",
                    "with no explanation", 'Return only that JSON object: {"corrected_rationale"'):
        assert element in text, element
    assert prompts.request_kind(msgs) == "correct"
    assert prompts.parse_request(msgs)["rationale"] == "It is  red. So the answer"  # as written, not collapsed


def test_the_judge_and_unknown_styles():
    assert prompts.prompt_preview("judge", "paper") == prompts.prompt_preview("judge")  # evaluators stay fixed
    assert "Reasoning to score" in prompts.prompt_preview("score", "paper")
    try:
        prompts.score_messages(PROBLEM, SENTS, None, "poetic")
    except ValueError as e:
        assert "poetic" in str(e)
    else:
        raise AssertionError("an unknown style was accepted")


def ask_in_styles(tmp_path, styles):
    """Score and correct PROBLEM through the client against the reference Teacher, once per style,
    on one cache: (results and usage per style, the request bodies the endpoint received)."""
    server = TeacherServer(ReferenceTeacher([PROBLEM]), "reference", FaultPlan({}, 0, 0.0, 0.0))
    bodies = []

    @web.middleware
    async def record(request, handler):
        bodies.append(await request.json())
        return await handler(request)

    async def main():
        app = web.Application(middlewares=[record])
        app.add_routes([web.post("/v1/chat/completions", server.chat)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        out = []
        try:
            for style in styles:
                s = at_url(base_url=f"http://127.0.0.1:{port}/v1", model="reference", api_key="k",
                                    vision=False, prompt_style=style)
                teacher = AsyncTeacher(s, ReplyCache(tmp_path / "cache.sqlite"))
                score = await teacher.score(ScoreItem(PROBLEM, ["A bar magnet attracts iron.", "The answer is (A)."]))
                fix = await teacher.correct(CorrectionItem(PROBLEM, "A nail is a magnet."))
                out.append((score, fix, teacher.usage()))
                await teacher.aclose()
        finally:
            await runner.cleanup()
        return out

    return asyncio.run(main()), bodies


def test_the_reference_teacher_answers_both_styles_and_the_style_is_in_the_cache_key(tmp_path):
    (aresnb, paper, paper_again), bodies = ask_in_styles(tmp_path, ["aresnb", "paper", "paper"])
    assert aresnb[0].scores == paper[0].scores == [1.0, 0.0] and not paper[0].dropped
    assert aresnb[1].text == paper[1].text and not paper[1].fallback
    # the paper style is another request: asked, not served from the aresnb reply; asked once
    assert (aresnb[2]["calls"], paper[2]["calls"], paper_again[2]["calls"]) == (2, 2, 0)
    assert paper_again[2]["cache_hits"] == 2
    assert [b["messages"][0]["content"] for b in bodies] == [prompts.SCORE_SYSTEM, prompts.CORRECT_SYSTEM,
                                                              SCORE_SYSTEM, CORRECT_SYSTEM]
    # the reply is held to the same schema in both styles
    assert bodies[0]["response_format"] == bodies[2]["response_format"]
    assert bodies[1]["response_format"] == bodies[3]["response_format"]
    assert len({cache_key(request_record("reference", prompts.PROMPT_VERSION, b["messages"], 0.0,
                                         b["response_format"])) for b in bodies}) == 4


def test_estimate_words_the_requests_in_the_configured_style():
    from aresnb.config import load_config
    from aresnb.pipeline.estimate import estimate

    def prompt_tokens(style):
        cfg = load_config(None, ["data.synthetic.n_train=24", "data.synthetic.n_test=8", f"teacher.prompt_style={style}"])
        return {r.stage: r.prompt_tokens for r in estimate(cfg)["rows"]}

    aresnb, paper = prompt_tokens("aresnb"), prompt_tokens("paper")
    assert paper["03_teacher_scores"] != aresnb["03_teacher_scores"]
    assert paper["05_correction_sft"] != aresnb["05_correction_sft"]
    assert paper["07_evaluation"] == aresnb["07_evaluation"]  # the judge's request has one wording
