"""YAML and ``--set`` overrides -> a validated :class:`~aresnb.config.sections.Config`.

Unknown keys, wrong types and out-of-range values fail before any work starts with a
:class:`ConfigError` that names the file (or ``--set``), the dotted key and, for a typo, the
closest valid key. This is the only module that reads YAML.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from aresnb.config.sections import PACKAGE_DIR, SMOKE_PARAMS, Config
from aresnb.data import registry as dataset_registry
from aresnb.data.schema import DataError
from aresnb.teacher import backends as teacher_backends


class ConfigError(ValueError):
    """A parameter file or override is invalid; the message names the file (or ``--set``) and the key."""


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-5`` as a number, as YAML 1.2 does.

    YAML 1.1 (PyYAML) requires a dot in a float, so ``lr: 1e-5`` would be the *string* "1e-5"
    while ``lr: 1.0e-5`` is a number: an exponent without a dot is appended as a float pattern.
    """


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(text: str) -> Any:
    """The project's one YAML reader (parameter files and ``--set`` values)."""
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass




def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}{hint}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return _build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, values: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f" (did you mean {(prefix + '.' if prefix else '') + close[0]!r}?)" if close else ""
            valid = ", ".join(fields)
            raise ConfigError(f"unknown key {where!r}{hint}; valid keys here: {valid}")
        f = fields[key]
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            # A partial nested section keeps this field's own defaults for the keys it omits.
            value = _merge(dataclasses.asdict(f.default_factory()), value)
        v = _coerce(value, hints[key], where)
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if lo is not None and v < lo:
                raise ConfigError(f"{where}: {v} is below the minimum {lo} ({f.metadata['doc']})")
            if hi is not None and v > hi:
                raise ConfigError(f"{where}: {v} is above the maximum {hi} ({f.metadata['doc']})")
        kwargs[key] = v
    return cls(**kwargs)


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'ppo.lr=1e-5'`` -> (['ppo', 'lr'], 1e-05); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. ppo.lr=1e-5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = read_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    return key.split("."), value


FAULT_RATES = ("rate_429", "rate_500", "rate_slow", "rate_malformed", "rate_truncated")


def _check_consistency(cfg: Config) -> None:
    """Rules that span keys (the caller adds where the values came from)."""
    try:
        dataset_registry.check(cfg.data)
    except DataError as e:
        raise ConfigError(str(e)) from None
    d = cfg.data
    if bool(d.features_file) != bool(d.name_map):
        raise ConfigError("data.features_file and data.name_map go together (MM-CoT's feature rows are found through "
                          f"its name map): got features_file={d.features_file!r}, name_map={d.name_map!r}")
    if d.features_shape is not None and (len(d.features_shape) != 2 or min(d.features_shape) < 1):
        raise ConfigError(f"data.features_shape must be [patches, dim] (positive), got {d.features_shape!r}")
    if not cfg.baseline.train and not cfg.model.init_from:
        raise ConfigError("baseline.train is false but model.init_from is not set: the baseline to evaluate without "
                          "training is an MM-CoT rationale checkpoint (e.g. models/mm-cot-base-rationale)")
    if cfg.ppo.micro_batch_size > cfg.ppo.batch_size:
        raise ConfigError(f"ppo.micro_batch_size ({cfg.ppo.micro_batch_size}) exceeds ppo.batch_size ({cfg.ppo.batch_size})")
    for fmt in cfg.answer.formats:
        if fmt not in ("QCM-A", "QCMG-A"):
            raise ConfigError(f"answer.formats: {fmt!r} is not one of ['QCM-A', 'QCMG-A']")
    if cfg.teacher.sentence_rules == "paper" and cfg.model.tokenizer == "train":
        # the paper's rules are written on T5's token pieces; a locally trained BPE has none of them
        raise ConfigError("teacher.sentence_rules=paper needs a T5 tokenizer (model.tokenizer, e.g. "
                          "../shared/tokenizers/flan-t5 or declare-lab/flan-alpaca-base), not 'train'")
    if not cfg.teacher.serve_local and not cfg.teacher.base_url:
        raise ConfigError("teacher.base_url is required when teacher.serve_local is false")
    for key, name in (("teacher.api_key_env", cfg.teacher.api_key_env),
                      ("evaluation.judge.api_key_env", cfg.evaluation.judge.api_key_env)):
        if name is not None and not name.replace("_", "").isalnum():
            raise ConfigError(f"{key} must be the NAME of an environment variable, got {name!r}")
    f = cfg.teacher.faults
    for entry in f.plan:
        index, _, fault = str(entry).partition(":")
        if not index.strip().isdigit() or fault.strip() not in ("429", "500", "slow", "malformed", "truncated"):
            raise ConfigError(f"teacher.faults.plan: {entry!r} is not 'N:fault' with fault one of "
                              "429, 500, slow, malformed, truncated")
    for fmt in f.reject_response_formats:
        if fmt not in ("json_schema", "json_object"):
            raise ConfigError(f"teacher.faults.reject_response_formats: {fmt!r} is not json_schema or json_object")
    if cfg.teacher.reference_error_rate and \
            not teacher_backends.backend_for(cfg.teacher.serve_local, cfg.teacher.local_backend).errs_on_purpose:
        raise ConfigError("teacher.reference_error_rate makes the local reference Teacher err: it needs "
                          "teacher.serve_local: true and teacher.local_backend: reference")
    if len(set(cfg.ares.arms)) != len(cfg.ares.arms):
        raise ConfigError(f"ares.arms names an arm twice: {cfg.ares.arms}")
    if "every_round" in cfg.ares.arms and cfg.ares.rounds < 2:
        raise ConfigError("ares.arms: every_round evaluates ARES after each earlier round; it needs ares.rounds >= 2")
    # The local server draws one fault per request from these shares: they cannot exceed 1.
    rates = {name: getattr(cfg.teacher.faults, name) for name in FAULT_RATES}
    if sum(rates.values()) > 1.0 + 1e-9:
        listed = ", ".join(f"{k}={v:g}" for k, v in rates.items() if v)
        raise ConfigError(f"teacher.faults: the fault rates sum to {sum(rates.values()):g}, above 1 ({listed}); "
                          "each request draws at most one fault")


def _resolve(values: dict) -> Config:
    cfg = _build(Config, values, "")
    _check_consistency(cfg)
    return cfg


def _blame(values: dict, overrides: list[tuple[str, dict]], where: str, message: str) -> str:
    """Where an error came from: the parameter file, or the first ``--set`` that introduces it."""
    def error_of(v: dict) -> str | None:
        try:
            _resolve(v)
        except ConfigError as e:
            return str(e)
        return None

    if error_of(values) == message:
        return where
    for text, nested in overrides:
        values = _merge(values, nested)
        if error_of(values) == message:
            return f"--set {text}"
    return f"{where} with --set {' '.join(t for t, _ in overrides)}"


def _param_file(source: str | Path | None) -> Path:
    """The parameter file's path: relative to the working directory, else to the project root."""
    path = Path(source) if source is not None else SMOKE_PARAMS
    if not path.is_absolute() and not path.exists() and (PACKAGE_DIR.parent / path).exists():
        path = PACKAGE_DIR.parent / path  # notebooks run in notebooks/: a path from the project root
    return path


def load_config(source: str | Path | dict | Config | None = None, overrides: list[str] | None = None) -> Config:
    """Resolve parameters from a YAML path, a dict (as papermill injects it) or None (smoke.yaml).

    A relative path is read from the working directory, else from the project root (so a notebook,
    which runs in ``notebooks/``, can open ``outputs/smoke/params.yaml``).

    ``overrides`` are dotted ``key=value`` strings applied on top, as ``--set`` does.
    """
    if isinstance(source, Config):
        values, where = source.to_dict(), "<config>"
    elif source is None or isinstance(source, (str, Path)):
        path = _param_file(source)
        where = str(path)
        if not path.exists():
            raise ConfigError(f"parameter file not found: {path}")
        try:
            values = read_yaml(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: not valid YAML: {e}") from e
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: the top level must be a mapping of sections")
    elif isinstance(source, dict):
        values, where = copy.deepcopy(source), "<parameters>"
    else:
        raise ConfigError(f"cannot read parameters from {type(source).__name__}")

    applied = []
    for text in overrides or []:
        keys, value = parse_override(text)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        applied.append((text, nested))
    merged = values
    for _, nested in applied:
        merged = _merge(merged, nested)
    try:
        return _resolve(merged)
    except ConfigError as e:
        raise ConfigError(f"{_blame(values, applied, where, str(e))}: {e}") from None


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, doc) for every field: the reference table of parameters."""
    rows = []
    hints = typing.get_type_hints(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe(hints[f.name], key + ".")
        else:
            rows.append((key, getattr(default, f.name), f.metadata.get("doc", "")))
    return rows


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def file_values(cfg: Config, path: str | Path, overrides: list[str] | None = None) -> list[tuple[str, Any, bool]]:
    """(dotted key, resolved value, whether it is the default) of every parameter the file (and the
    ``--set`` overrides) sets, in the file's order: what ``aresnb params FILE`` shows. A value the
    file sets to its default still counts (e.g. the paper files' gradient clipping at 1.0)."""
    keys = list(_flat(read_yaml(_param_file(path).read_text()) or {}))
    keys += [k for k in (o.partition("=")[0].strip() for o in overrides or []) if k not in keys]
    resolved, defaults = _flat(cfg.to_dict()), _flat(Config().to_dict())
    return [(k, resolved[k], resolved[k] == defaults.get(k)) for k in keys if k in resolved]
