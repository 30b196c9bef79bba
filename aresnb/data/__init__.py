"""Stage 01's package: the problem schema, dataset loaders, prompts, vision features.

Importing ``aresnb.data`` (or ``aresnb.data.synthetic``) does not import torch: the Teacher uses
``categories`` and ``synthetic.check_sentence`` without it. Feature extraction imports torch lazily.
"""

from .schema import CATEGORY_COLUMNS, FEATURES, SPLITS, DataError, categories, category_counts
from .stage import load_features, load_problems, run_data_stage

__all__ = [
    "CATEGORY_COLUMNS", "FEATURES", "SPLITS", "DataError", "categories", "category_counts",
    "load_features", "load_problems", "run_data_stage",
]
