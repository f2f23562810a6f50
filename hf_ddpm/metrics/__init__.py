"""Sample quality in numbers: Fréchet distance, Inception-style score, class histogram, precision/recall.

Features and class probabilities come from transformers image models (any ``AutoModel`` /
``AutoModelForImageClassification`` by Hub id or folder) or from the built-in digits evaluator, a small ViT
trained on the digits' train split on first use. Numbers are named after their features: "FD_DINOv2",
"FD (digits classifier)" — never "FID", which means Inception-v3 features.

>>> from hf_ddpm.metrics import sample_quality
>>> q = sample_quality(generated, reference)                      # doctest: +SKIP
>>> q["fd"], q["inception_score"], q["precision"], q["recall"]    # doctest: +SKIP
"""

from .digits_evaluator import EVALUATOR_VERSION, load_digits_evaluator
from .features import classifier_outputs, image_features, load_image_model
from .quality import QualityModels, sample_quality
from .reference_stats import ReferenceStats
from .statistics import class_balance_chi2, class_histogram, frechet_distance, inception_score, precision_recall

__all__ = [
    "EVALUATOR_VERSION",
    "QualityModels",
    "ReferenceStats",
    "class_balance_chi2",
    "class_histogram",
    "classifier_outputs",
    "frechet_distance",
    "image_features",
    "inception_score",
    "load_digits_evaluator",
    "load_image_model",
    "precision_recall",
    "sample_quality",
]
