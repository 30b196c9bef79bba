"""Datasets into one problem schema: loaders (ScienceQA, A-OKVQA, the embedded synthetic set and
its grader), MM-CoT prompt formats, vision features. Knows nothing of run folders.

Importing ``aresnb.data`` (or ``aresnb.data.synthetic_grader``) does not import torch: the Teacher
uses ``categories`` and the grader without it. Feature extraction imports torch when it runs; only
the loaders and ``to_dataset_dict`` import ``datasets`` (the GPU check runs without it).
"""

from .schema import CATEGORY_COLUMNS, SPLITS, DataError, categories, category_counts, dataset_features

__all__ = ["CATEGORY_COLUMNS", "SPLITS", "DataError", "categories", "category_counts", "dataset_features"]
