"""aresnb.stages.steps.NOT_IN_STEP_KEY: which parameters a finished step's key ignores.

A key that ignores too little re-runs paid Teacher stages (and retrains PPO and SFT) when only a
throughput setting changed; one that ignores too much reuses a step whose replies would differ.
Every teacher field is decided here, one by one: a new field fails the test until it is put in one
of the two sets below.
"""

import dataclasses
import typing

import pytest

from aresnb.config import load_config
from aresnb.config.sections import TeacherConfig
from aresnb.stages.steps import NOT_IN_STEP_KEY, NOTEBOOKS_DIR, STAGE_SECTIONS, build_schedule, step_key

# How fast, how persistently and how much: none of these changes a reply or what a stage writes.
OUTSIDE_THE_KEY = {
    "concurrency", "max_retries", "timeout_s", "backoff_base_s", "backoff_max_s",  # throughput, retries
    "max_requests_per_minute", "max_tokens_per_minute",  # client-side rate limits
    "cassette",  # imported into the cache: answers that the cache would serve anyway
    "max_drop_share", "max_cost_usd",  # whether a stage fails, never what it wrote
    "image_tokens", "assumed_latency_s",  # estimates: the budget's and the limiter's reservations, `aresnb estimate`
}
# What is asked, of whom, and where the answers come from: a change re-runs the stages that read it.
IN_THE_KEY = {
    "base_url", "model", "api_key_env", "serve_local", "local_backend", "vision", "response_format", "temperature",
    "max_tokens", "cache_path", "replay_only", "price_input_per_mtok", "price_output_per_mtok",
    "faults",
    "reference_error_rate", "prompt_style", "sentence_rules",  # each changes the replies or what is asked
}


def test_every_teacher_field_is_decided_and_the_key_leaves_out_exactly_the_throughput_fields():
    names = {f.name for f in dataclasses.fields(TeacherConfig)}
    assert not OUTSIDE_THE_KEY & IN_THE_KEY
    undecided, gone = names - OUTSIDE_THE_KEY - IN_THE_KEY, (OUTSIDE_THE_KEY | IN_THE_KEY) - names
    assert not undecided, f"new teacher fields {sorted(undecided)}: does a change alter a reply? put each in one set"
    assert not gone, f"{sorted(gone)} are no longer teacher fields"
    assert set(NOT_IN_STEP_KEY["teacher"]) == OUTSIDE_THE_KEY


def test_every_listed_key_is_a_field_of_its_section():
    cfg = load_config(None)
    for section, keys in NOT_IN_STEP_KEY.items():
        fields = {f.name for f in dataclasses.fields(getattr(cfg, section))}
        assert set(keys) <= fields, f"{section}: {sorted(set(keys) - fields)} are not fields (misspelt: ignored silently)"


def _keys(cfg) -> dict[str, str]:
    """Every step's key in a run where every step completed (completion ids fixed)."""
    schedule = build_schedule(cfg.ares.rounds)
    stages = {s.label: {"status": "done", "completion_id": f"c-{s.label}"} for s in schedule}
    return {s.label: step_key(cfg, s, stages, schedule, NOTEBOOKS_DIR / f"{s.stage}.ipynb") for s in schedule}


def _other(value, hint):
    """A value different from ``value`` of the field's type (the key hashes values; none is validated here)."""
    if value is None:
        inner = [a for a in typing.get_args(hint) if a is not type(None)][0]
        return {float: 1.5, int: 3, str: "changed"}[typing.get_origin(inner) or inner]
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "-changed"
    if isinstance(value, list):
        return [*value, "changed"]
    raise TypeError(f"no other value for {value!r}")


def _leaves(obj, prefix=()):
    """(path, value, type hint) of every leaf field of a config dataclass, nested ones included."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, (*prefix, f.name))
        else:
            yield (*prefix, f.name), value, hints[f.name]


def _changed(cfg, section: str, path: tuple, new):
    def replace(obj, path):
        head, *rest = path
        return dataclasses.replace(obj, **{head: replace(getattr(obj, head), rest) if rest else new})
    return dataclasses.replace(cfg, **{section: replace(getattr(cfg, section), path)})


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, ["ares.rounds=2"])


@pytest.mark.parametrize("section,key", [(s, k) for s, keys in NOT_IN_STEP_KEY.items() for k in keys])
def test_a_key_left_out_changes_no_step_key(cfg, section, key):
    hint = typing.get_type_hints(type(getattr(cfg, section)))[key]
    changed = _changed(cfg, section, (key,), _other(getattr(getattr(cfg, section), key), hint))
    assert changed.to_dict() != cfg.to_dict()
    assert _keys(changed) == _keys(cfg)


def test_any_other_teacher_field_changes_the_keys_of_exactly_the_stages_that_read_the_teacher(cfg):
    before = _keys(cfg)
    readers = {s.label for s in build_schedule(cfg.ares.rounds) if "teacher" in STAGE_SECTIONS[s.stage]}
    assert {label.split("/")[-1] for label in readers} == {"03_teacher_scores", "04_ppo", "05_correction_sft",
                                                          "07_evaluation"}
    checked = 0
    for path, value, hint in _leaves(cfg.teacher):
        if path[0] in NOT_IN_STEP_KEY["teacher"]:
            continue
        after = _keys(_changed(cfg, "teacher", path, _other(value, hint)))
        moved = {label for label in before if after[label] != before[label]}
        assert moved == readers, f"teacher.{'.'.join(path)}: changed the keys of {sorted(moved)}"
        checked += 1
    assert checked >= len(IN_THE_KEY)  # faults counts once per field of its own
