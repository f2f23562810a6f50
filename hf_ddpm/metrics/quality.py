"""``sample_quality``: FD, Inception-style score, class histogram and precision/recall of samples in one call."""

from __future__ import annotations

import re

import numpy as np
import torch

from ..errors import ParameterError

from .digits_evaluator import EVALUATOR_NAME, load_digits_evaluator
from .features import classifier_outputs, image_features, load_image_model
from .images import as_image_batch
from .inception import InceptionNet, is_inception, load_inception
from .reference_stats import ReferenceStats
from .statistics import (class_histogram, frechet_distance, inception_score, inception_score_splits, label_accuracy,
                         precision_recall)

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
    check_k(k, len(generated), len(reference))
    models = QualityModels(feature_model, classifier, device=device, batch_size=batch_size, progress=progress)
    features, probs = models.sample_outputs(generated)
    return models.numbers(features, probs, models.features(reference), k=k, requested_classes=requested_classes)


def check_k(k: int, num_samples: int, num_reference: int | None) -> None:
    """The precision/recall neighbourhood ``k`` fits both sets (``num_reference`` None: reference stats, no PR)."""
    smallest = num_samples if num_reference is None else min(num_samples, num_reference)
    if not 1 <= k < smallest:
        raise ParameterError("k", f"must satisfy 1 ≤ k < the smaller image set ({smallest} images), got k={k}")


class QualityModels:
    """The networks behind :func:`sample_quality`'s numbers, chosen by ``feature_model`` and ``classifier`` (as
    documented there) and loaded once, so that the features of each share of the images can be computed apart (one
    process each, ``hf_ddpm.distributed_eval``) and the numbers from all of them (:meth:`numbers`).

    "inception" (or a TorchScript ``.pt``) as ``feature_model`` is the Inception-v3 of papers' FID
    (:mod:`hf_ddpm.metrics.inception`) and, without a ``classifier``, also gives their IS."""

    def __init__(self, feature_model: str | None = None, classifier: str | None = None, *, device=None,
                 batch_size: int = 64, progress: bool = True):
        if feature_model is None or feature_model == DIGITS:
            feature_model = DIGITS
            classifier = DIGITS if classifier is None else classifier
        elif is_inception(feature_model) and classifier is None:
            classifier = feature_model
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.run = dict(batch_size=batch_size, progress=progress)
        self.record: dict = {}
        nets: dict = {}

        def net(name: str, task: str, role: str):
            if name not in nets:
                if name == DIGITS:
                    nets[name], self.record = load_digits_evaluator(device=device)
                elif is_inception(name):
                    nets[name] = load_inception(name, role, device=device)
                else:
                    nets[name] = load_image_model(name, task=task, role=role, device=device)
            return nets[name]

        self.feature_net = net(feature_model, "features", "feature_model")
        self.feature_is_classifier = feature_model == DIGITS  # its features are a classifier's penultimate ones
        self.classifier_net = None if classifier is None else net(classifier, "classification", "classifier")
        self.classifier = classifier
        if feature_model == DIGITS:
            self.fd_name, self.feature_model = "FD (digits classifier)", EVALUATOR_NAME
        elif isinstance(self.feature_net, InceptionNet):
            self.fd_name, self.feature_model = self.feature_net.fd_name, self.feature_net.name
        else:
            self.fd_name, self.feature_model = _fd_name(self.feature_net), self.feature_net.name

    def _outputs(self, images: torch.Tensor, network, *, classifying: bool, features: bool, probabilities: bool):
        """(features, probabilities) of ``network``; a classifier gives both in one pass, a feature model only
        features."""
        if isinstance(network, InceptionNet):
            return network.outputs(images, features=features, probabilities=probabilities, **self.run)
        if classifying:
            return classifier_outputs(images, network, **self.run)
        return image_features(images, network, **self.run), None

    def features(self, images) -> np.ndarray:
        """The FD features (N, D) of images (any form :func:`as_image_batch` takes)."""
        return self._outputs(as_image_batch(images, "images"), self.feature_net, classifying=self.feature_is_classifier,
                             features=True, probabilities=False)[0]

    def sample_outputs(self, images) -> tuple[np.ndarray, np.ndarray | None]:
        """The samples' FD features (N, D) and the classifier's probabilities (N, K) (None without a classifier),
        with one pass where one network gives both."""
        images = as_image_batch(images, "generated")
        both = self.classifier_net is self.feature_net
        features, probs = self._outputs(images, self.feature_net, classifying=self.feature_is_classifier,
                                        features=True, probabilities=both)
        if self.classifier_net is None:
            return features, None
        if not both:
            probs = self._outputs(images, self.classifier_net, classifying=True, features=False, probabilities=True)[1]
        return features, probs

    def numbers(self, features, probs, reference, *, k: int = 3, requested_classes=None) -> dict:
        """:func:`sample_quality`'s dict from the samples' ``features`` and ``probs`` and the ``reference``: its
        features (N, D), or :class:`~hf_ddpm.metrics.reference_stats.ReferenceStats` (FD only: precision and recall
        need the reference features and are None)."""
        stats = isinstance(reference, ReferenceStats)
        check_k(k, len(features), None if stats else len(reference))
        result: dict = {"num_samples": len(features),
                        "num_reference": reference.num_images if stats else len(reference), "k": k, "fd_name": self.fd_name, "feature_model": self.feature_model, **self.record}
        if stats:
            result.update(fd=reference.frechet_distance(features), precision=None, recall=None,
                          reference=reference.source)
        else:
            result["fd"] = frechet_distance(features, reference)
            result["precision"], result["recall"] = precision_recall(reference, features, k=k)
        labelled = requested_classes is not None and probs is not None and \
            not isinstance(self.classifier_net, InceptionNet)
        result["label_accuracy"] = label_accuracy(probs, classifier_indices(requested_classes, self.classifier_net)) \
            if labelled else None
        if probs is None:
            result.update(inception_score=None, score_name=None, class_histogram=None, classifier=None)
            return result
        if isinstance(self.classifier_net, InceptionNet):
            name, score_name = self.classifier_net.name, self.classifier_net.score_name
            result["inception_score_10_splits"] = inception_score_splits(probs, 10)
        else:
            name = EVALUATOR_NAME if self.classifier == DIGITS else self.classifier
            score_name = f"IS ({'digits classifier' if self.classifier == DIGITS else self.classifier})"
        result.update(inception_score=inception_score(probs), score_name=score_name,
                      class_histogram=class_histogram(probs), classifier=name)
        return result
