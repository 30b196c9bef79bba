"""Parameter files: YAML -> validated, typed config objects.

Every section is a dataclass; every field has a default (the embedded offline default,
``params/smoke.yaml``), a one-line doc and, where it matters, a range or a set of choices.
Unknown keys, wrong types and out-of-range values fail *before any work starts* with a
:class:`ConfigError` that names the file, the dotted key and, for a typo, the closest valid key.

``aresnb.config.loading`` is the only module that reads YAML; ``aresnb.config.sections`` holds
the dataclasses. Secrets never live here: a key is named by the
environment variable that holds it (``teacher.api_key_env``).
"""

from aresnb.config.loading import (FAULT_RATES, ConfigError, describe, file_values, load_config, parse_override,
                                   read_yaml)
from aresnb.config.sections import (
    RunConfig, SyntheticDataConfig, DataConfig, FeaturesConfig, ModelConfig, TrainConfig,
    BaselineConfig, RolloutConfig, TeacherFaultsConfig, TeacherConfig, PPOConfig, CorrectionConfig, AresConfig,
    AnswerConfig, JudgeConfig, EvaluationConfig, Config, PACKAGE_DIR, SMOKE_PARAMS, p,
)

__all__ = [
    "FAULT_RATES", "ConfigError", "describe", "file_values", "load_config", "parse_override", "read_yaml",
    "RunConfig", "SyntheticDataConfig", "DataConfig", "FeaturesConfig", "ModelConfig",
    "TrainConfig", "BaselineConfig", "RolloutConfig", "TeacherFaultsConfig", "TeacherConfig", "PPOConfig",
    "CorrectionConfig", "AresConfig", "AnswerConfig", "JudgeConfig", "EvaluationConfig", "Config",
    "PACKAGE_DIR", "SMOKE_PARAMS", "p",
]
