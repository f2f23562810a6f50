"""The card's YAML metadata, checked offline.

huggingface_hub's ``ModelCard.validate`` posts the card to the Hub's ``/api/validate-yaml`` endpoint, so it cannot run
without the network; :func:`check_card_metadata` is the local stand-in that every rendered card passes through.
"""

from __future__ import annotations

import math

import yaml
from huggingface_hub import ModelCard, ModelCardData

CARD_TAGS = ("pytorch", "diffusers", "unconditional-image-generation", "ddpm", "hf-ddpm")
PIPELINE_TAG = "unconditional-image-generation"
LICENSE = "apache-2.0"
# A class-conditional model is no unconditional-image-generation model, and the Hub has no pipeline tag for it: it
# carries none, and says what it is in free tags ("conditional-image-generation" as the Hub's staff suggest).
CONDITIONAL_TAG = "class-conditional-image-generation"
CONDITIONAL_CARD_TAGS = ("pytorch", "diffusers", "conditional-image-generation", CONDITIONAL_TAG,
                         "classifier-free-guidance", "ddpm", "hf-ddpm")


def card_tags(class_conditional: bool) -> tuple[tuple[str, ...], str | None]:
    """(tags, pipeline tag) of the card of an unconditional or a class-conditional model."""
    return (CONDITIONAL_CARD_TAGS, None) if class_conditional else (CARD_TAGS, PIPELINE_TAG)


def check_card_metadata(card: ModelCard | str) -> None:
    """Offline check of a card's YAML metadata; raises ``ValueError`` naming the problem.

    The YAML block parses to a mapping, huggingface_hub's own ``ModelCardData`` accepts it with metadata errors raised
    (``model-index`` parsed into ``EvalResult``s and written back), the fields the Hub reads have the right types and
    finite values, and the library, pipeline tag and tags are the ones a diffusers DDPM page needs: those of
    :func:`card_tags`, a class-conditional model's (tagged :data:`CONDITIONAL_TAG`) without the unconditional ones.
    """
    text = str(card)
    if not text.startswith("---\n"):
        raise ValueError("model card has no YAML metadata block (it must start with '---')")
    block = text[4:].split("\n---\n", 1)[0]
    metadata = yaml.safe_load(block)
    if not isinstance(metadata, dict):
        raise ValueError(f"model card metadata must be a YAML mapping, got {type(metadata).__name__}")
    try:
        data = ModelCardData(**metadata, ignore_metadata_errors=False)
    except (KeyError, TypeError, AttributeError) as err:  # huggingface_hub's model-index parser on a malformed entry
        raise ValueError(f"model card metadata is malformed (model-index): missing or bad {err}") from err
    if data.library_name != "diffusers":
        raise ValueError(f"library_name must be 'diffusers', got {data.library_name!r}")
    tags, pipeline_tag = card_tags(CONDITIONAL_TAG in (data.tags or []))
    if data.pipeline_tag != pipeline_tag:
        raise ValueError(f"pipeline_tag must be {pipeline_tag!r}" + (" for a class-conditional model" if
                         pipeline_tag is None else "") + f", got {data.pipeline_tag!r}")
    if not isinstance(data.license, str) or not data.license:
        raise ValueError(f"license must be a licence id string, got {data.license!r}")
    for field in ("tags", "datasets"):
        values = getattr(data, field)
        if values is not None and not (isinstance(values, list) and all(isinstance(v, str) and v for v in values)):
            raise ValueError(f"{field} must be a list of non-empty strings, got {values!r}")
    missing = [tag for tag in tags if tag not in (data.tags or [])]
    if missing:
        raise ValueError(f"tags lack {missing}")
    if pipeline_tag is None and PIPELINE_TAG in data.tags:
        raise ValueError(f"tags hold {PIPELINE_TAG!r} beside {CONDITIONAL_TAG!r}: a model is one or the other")
    for result in data.eval_results or []:
        if not isinstance(result.metric_value, (int, float)) or not math.isfinite(result.metric_value):
            raise ValueError(f"model-index metric {result.metric_type!r} has a non-finite value {result.metric_value!r}")
    if data.eval_results and data.to_dict().get("model-index") is None:
        raise ValueError("eval_results did not convert to a model-index")
