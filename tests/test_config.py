"""Parameter files: every shipped file validates; bad input fails early and says where."""

from pathlib import Path

import pytest

from aresnb.config import BaselineConfig, Config, ConfigError, TrainConfig, describe, load_config, parse_override

ROOT = Path(__file__).resolve().parent.parent
PARAM_FILES = sorted((ROOT / "params").glob("*.yaml"))


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_shipped_parameter_files_validate(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)


def test_default_is_smoke_yaml_and_offline():
    cfg = load_config()
    assert cfg.run.name == "smoke"
    assert cfg.data.source == "synthetic"
    assert cfg.teacher.serve_local and cfg.model.base == "tiny" and cfg.features.model == "tiny"


def test_paper_files_carry_the_papers_settings():
    base = load_config(ROOT / "params" / "scienceqa_base.yaml")
    large = load_config(ROOT / "params" / "scienceqa_large.yaml")
    assert base.model.base == "declare-lab/flan-alpaca-base"
    assert large.model.base == "declare-lab/flan-alpaca-large"
    assert (base.ppo.lam, base.ppo.gamma, base.ppo.clip_range, base.ppo.vf_coef) == (0.95, 1.0, 0.2, 1.0)
    assert (base.ppo.lr, base.ppo.weight_decay, base.ppo.adam_eps) == (2e-5, 0.01, 1e-8)
    assert base.ppo.kl_loss_coef == 0.0 and base.ppo.value_model == "separate"  # no guard in the paper files
    assert (base.ppo.ppo_epochs, large.ppo.ppo_epochs) == (10, 5)
    assert (base.ppo.batch_size, large.ppo.batch_size) == (256, 128)
    assert base.ppo.whiten_advantages and not large.ppo.whiten_advantages
    assert (base.answer.r, base.answer.alpha, base.answer.dropout) == (64, 128, 0.05)
    assert base.rollout.samples_per_problem == 4 and base.rollout.top_k == 50
    assert base.features.model == "google/vit-large-patch32-384"
    assert not base.teacher.serve_local and base.teacher.base_url


def test_paper_files_ask_the_paper_rubric_and_sentence_ends_and_smoke_keeps_its_own(capsys):
    for name in ("scienceqa_base", "scienceqa_large", "aokvqa_base"):
        t = load_config(ROOT / "params" / f"{name}.yaml").teacher
        assert (t.prompt_style, t.sentence_rules) == ("paper", "paper"), name
    smoke = load_config().teacher
    assert (smoke.prompt_style, smoke.sentence_rules) == ("aresnb", "aresnb")
    from aresnb.pipeline import cli

    cli.main(["params", str(ROOT / "params" / "scienceqa_base.yaml")])  # exit 1 here: no API keys
    shown = capsys.readouterr().out.splitlines()
    assert "  teacher.prompt_style: paper" in shown and "  teacher.sentence_rules: paper" in shown
    assert "  teacher.temperature: 0.0" not in shown  # only what the file sets away from the defaults


def test_typo_names_file_key_and_closest_valid_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("ppo:\n  clip_rnage: 0.2\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert str(f) in msg and "ppo.clip_rnage" in msg and "ppo.clip_range" in msg


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("ppo.lr=fast", "ppo.lr: expected a number"),
        ("ppo.clip_range=-0.1", "below the minimum"),
        ("ppo.gamma=1.5", "above the maximum"),
        ("data.source=sciqa", "did you mean 'scienceqa'"),
        ("model.use_image=maybe", "expected true or false"),
        ("rollout.samples_per_problem=2.5", "expected an integer"),
        ("nosuchsection.x=1", "unknown key 'nosuchsection'"),
        ("teacher.api_key_env=sk-abc123-secret", "NAME of an environment variable"),
        ("ppo.micro_batch_size=1000", "exceeds ppo.batch_size"),
    ],
)
def test_bad_values_fail_before_work(override, fragment):
    with pytest.raises(ConfigError, match=None) as e:
        load_config(None, [override])
    assert fragment in str(e.value)


def test_partial_sections_keep_their_own_defaults(tmp_path):
    """answer.train and correction.sft are TrainConfigs with defaults of their own: a file that sets
    one of their keys keeps those defaults for the rest, not TrainConfig's (lr 1e-3, 8 epochs)."""
    assert (TrainConfig().lr, TrainConfig().epochs) == (1e-3, 8.0)
    f = tmp_path / "partial.yaml"
    f.write_text("answer:\n  train: {epochs: 3}\ncorrection:\n  sft: {batch_size: 4}\n")
    cfg = load_config(f)
    assert (cfg.answer.train.epochs, cfg.answer.train.lr) == (3.0, 3e-3)
    assert (cfg.correction.sft.batch_size, cfg.correction.sft.lr, cfg.correction.sft.epochs) == (4, 5e-4, 4.0)
    assert cfg.answer.r == 16 and cfg.baseline == BaselineConfig(epochs=10.0, lr=3e-3)  # untouched sections


def test_dotted_overrides_keep_the_sections_own_defaults(tmp_path):
    f = tmp_path / "minimal.yaml"
    f.write_text("run:\n  name: minimal\n")  # no answer, data or ppo section at all
    cfg = load_config(f, ["ppo.lr=1e-5", "answer.train.epochs=3", "data.synthetic.n_train=10"])
    assert cfg.ppo.lr == 1e-5 and cfg.ppo.batch_size == 256  # PPOConfig's default, not smoke.yaml's 64
    assert (cfg.answer.train.epochs, cfg.answer.train.lr) == (3.0, 3e-3)
    assert (cfg.data.synthetic.n_train, cfg.data.synthetic.n_val) == (10, 48)


def test_override_syntax_errors():
    with pytest.raises(ConfigError):
        parse_override("ppo.lr")
    assert parse_override("answer.formats=[QCM-A]") == (["answer", "formats"], ["QCM-A"])


def test_scienceqa_source_needs_a_location():
    with pytest.raises(ConfigError, match="data.path or data.hub_id"):
        load_config(None, ["data.source=scienceqa"])


def test_hash_is_stable_and_sensitive():
    assert load_config().hash() == load_config().hash()
    assert load_config().hash() != load_config(None, ["ppo.lr=1e-6"]).hash()


def test_every_parameter_is_documented():
    rows = describe()
    assert len(rows) > 80
    undocumented = [k for k, _, doc in rows if not doc]
    assert not undocumented, undocumented
