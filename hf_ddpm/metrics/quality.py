"""``sample_quality``: FD, Inception-style score, class histogram and precision/recall of samples in one call."""

from __future__ import annotations

import re

import torch

from ..errors import ParameterError

from .digits_evaluator import EVALUATOR_NAME, load_digits_evaluator
from .features import classifier_outputs, image_features, load_image_model
from .images import as_image_batch
from .statistics import class_histogram, frechet_distance, inception_score, label_accuracy, precision_recall

DIGITS = "digits"  # names the built-in digits evaluator where a model is expected
_PRETTY = {"dinov2": "DINOv2", "dinov2_with_registers": "DINOv2-reg", "vit": "ViT", "clip_vision_model": "CLIP",
           "siglip_vision_model": "SigLIP", "convnext": "ConvNeXt", "resnet": "ResNet"}


def _fd_name(net) -> str:
    model_type = getattr(net.model.config, "model_type", "features")
    return f"FD_{_PRETTY.get(model_type, model_type)}"


def classifier_indices(class_names, net) -> list[int]:
    """The output index of a classifier (``net``) for each class name: the index its config's ``id2label`` gives that
    name, else the name read as an index (the digits evaluator's outputs 0 … 9 are the digits "0" … "9")."""
    config = net.model.config
    by_name = {str(label): int(index) for index, label in (getattr(config, "id2label", None) or {}).items()}
    indices = []
    for name in class_names:
        name = str(name)
        if name in by_name:
            indices.append(by_name[name])
        elif re.fullmatch(r"\d+", name) and int(name) < config.num_labels:
            indices.append(int(name))
        else:
            shown = ", ".join(repr(label) for label in list(by_name)[:12])
            raise ParameterError("classifier", f"{net.name!r} has no class {name!r} (its classes are {shown}"
                                               f"{' …' if len(by_name) > 12 else ''}): it cannot judge which samples "
                                               "show the class they were generated for")
    return indices


def sample_quality(
    generated,
    reference,
    *,
    feature_model: str | None = None,
    classifier: str | None = None,
    k: int = 3,
    batch_size: int = 64,
    device=None,
    progress: bool = True,
    requested_classes=None,
) -> dict:
    """Sample-quality numbers of ``generated`` images against ``reference`` images, as a JSON-safe dict.

    Images: float arrays/tensors in [0, 1] or uint8 in [0, 255], shaped (N, C, H, W) or (N, H, W), or lists of
    PIL images; grey and RGB are converted to what each network takes, and every image reaches the networks'
    processors as 8-bit (rounded), as a PIL image would.

    - ``feature_model``: None → the built-in digits evaluator's penultimate features ("FD (digits classifier)");
      else a Hub id or folder of any transformers image model loaded with ``AutoModel``
      (e.g. "facebook/dinov2-small" → "FD_DINOv2").
    - ``classifier``: the network for the score and the class histogram. None → the digits evaluator when
      ``feature_model`` is None too, otherwise no score; "digits" → the digits evaluator; else a Hub id or folder
      for ``AutoModelForImageClassification``.
    - ``k``: neighbourhood size of the precision/recall manifolds (computed in the FD feature space).
    - ``requested_classes``: for a class-conditional generator, the class name each generated image was asked for
      (:func:`classifier_indices` maps them to the classifier's outputs): gives ``label_accuracy``, the share the
      classifier assigns to that class (None without it or without a classifier).

    Returns ``fd``, ``fd_name``, ``precision``, ``recall``, ``k``, ``inception_score``, ``score_name`` and
    ``class_histogram`` (None without a classifier), ``label_accuracy``, ``num_samples``, ``num_reference``,
    ``feature_model``, ``classifier``, and with the digits evaluator its ``evaluator_version``, ``evaluator_seed`` and
    ``evaluator_test_accuracy``.
    """
    generated = as_image_batch(generated, "generated")
    reference = as_image_batch(reference, "reference")
    smallest = min(len(generated), len(reference))
    if not 1 <= k < smallest:
        raise ValueError(f"k must satisfy 1 ≤ k < the smaller image set ({smallest} images), got k={k}")
    if feature_model is None or feature_model == DIGITS:
        feature_model = DIGITS
        classifier = DIGITS if classifier is None else classifier
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    run = dict(batch_size=batch_size, progress=progress)

    result: dict = {"num_samples": len(generated), "num_reference": len(reference), "k": k}
    digits_net = None
    if DIGITS in (feature_model, classifier):
        digits_net, record = load_digits_evaluator(device=device)
        result.update(record)

    probs, classifier_net = None, digits_net
    if feature_model == DIGITS:
        gen_features, digits_probs = classifier_outputs(generated, digits_net, **run)
        probs = digits_probs if classifier == DIGITS else None  # another classifier judges the classes
        ref_features, _ = classifier_outputs(reference, digits_net, **run)
        result.update(fd_name="FD (digits classifier)", feature_model=EVALUATOR_NAME)
    else:
        net = load_image_model(feature_model, task="features", role="feature_model", device=device)
        gen_features = image_features(generated, net, **run)
        ref_features = image_features(reference, net, **run)
        result.update(fd_name=_fd_name(net), feature_model=net.name)
    result["fd"] = frechet_distance(gen_features, ref_features)
    result["precision"], result["recall"] = precision_recall(ref_features, gen_features, k=k)

    if classifier is not None and probs is None:
        classifier_net = digits_net if classifier == DIGITS else load_image_model(
            classifier, task="classification", role="classifier", device=device)
        _, probs = classifier_outputs(generated, classifier_net, **run)
    result["label_accuracy"] = None if probs is None or requested_classes is None else \
        label_accuracy(probs, classifier_indices(requested_classes, classifier_net))
    if probs is None:
        result.update(inception_score=None, score_name=None, class_histogram=None, classifier=None)
    else:
        name = EVALUATOR_NAME if classifier == DIGITS else classifier
        short = "digits classifier" if classifier == DIGITS else classifier
        result.update(inception_score=inception_score(probs), score_name=f"IS ({short})",
                      class_histogram=class_histogram(probs), classifier=name)
    return result
