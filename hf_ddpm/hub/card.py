"""The model card: ``model_card.md`` (Jinja, at the repository root; ``hf_ddpm/model_card.md`` links to it) rendered
through huggingface_hub's ``ModelCard``/``ModelCardData`` from the saved pipeline and its ``RunRecord``. No network.

:func:`write_model_card` writes ``<output_dir>/README.md``; :func:`render_model_card` returns the card, for any repo
id (``hf-ddpm push`` renders it again for the repo it pushes to). The template's one variable is ``card``, a
:class:`~.card_facts.CardFacts`; the YAML metadata (tags, licence, the model-index of measured numbers) is built here
and checked offline by :func:`~.metadata.check_card_metadata`.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..training.record import RunRecord
from .card_facts import CardFacts
from .metadata import LICENSE, card_tags, check_card_metadata

TEMPLATE_PATH = Path(__file__).parent.parent / "model_card.md"  # a link to the repository root's model_card.md
CARD_FILE = "README.md"


def write_model_card(output_dir: str | os.PathLike, record: RunRecord | None = None) -> Path:
    """Render the model card of the pipeline saved in ``output_dir`` into ``output_dir/README.md``; returns its path.

    Call it after ``pipeline.save_pretrained(output_dir)``: the network and the process are read from the saved
    configs. ``record`` is the run that trained it (its settings, results and images, whose paths are relative to
    ``output_dir``); None for a pipeline saved by hand, whose card says "not recorded" for what it cannot know. The
    trainer saves the record too (``record.save(output_dir)``), so that a push renders the card again from it.
    """
    card = render_model_card(output_dir, record)
    path = Path(output_dir) / CARD_FILE
    card.save(path)
    return path


def render_model_card(folder: str | os.PathLike, record: RunRecord | None = None, *,
                      repo_id: str | None = None) -> ModelCard:
    """The card of the pipeline saved in ``folder`` and its run ``record``; the usage snippets load ``repo_id``
    (default: the record's ``hub_model_id``, else the folder's name). The metadata is checked before it is returned.
    """
    facts = CardFacts.gather(Path(folder), record, repo_id)
    card = ModelCard.from_template(_card_data(facts), template_path=str(TEMPLATE_PATH), card=facts)
    check_card_metadata(card)
    return card


def _card_data(facts: CardFacts) -> ModelCardData:
    """The YAML metadata: library, licence, tags, pipeline tag, Hub datasets and the model-index of measured numbers
    (for a class-conditional model also its marginal and null-label bounds and its generative classifier)."""
    data, results = facts.data, facts.results
    conditional = facts.conditioning is not None
    tags, pipeline_tag = card_tags(conditional)
    task = ("conditional-image-generation", "Class-conditional image generation") if conditional else \
        ("unconditional-image-generation", "Unconditional image generation")
    common = dict(task_type=task[0], task_name=task[1], dataset_type=data.index_type, dataset_name=data.index_name,
                  dataset_config=data.config_name)
    measured = []
    if results is not None:
        name = "NLL bound given the true labels (bits/dim)" if conditional else "NLL bound (bits/dim)"
        measured.append(EvalResult(**common, metric_type="bits_per_dim", metric_name=name,
                                   metric_value=round(results.test_bits_per_dim, 4)))
    bounds = facts.class_bounds
    if bounds is not None:
        measured += [
            EvalResult(**common, metric_type="marginal_bits_per_dim", metric_name="Marginal NLL bound (bits/dim)",
                       metric_value=round(bounds["marginal"]["bits_per_dim"], 4)),
            EvalResult(**common, metric_type="null_label_bits_per_dim", metric_name="Null-label NLL bound (bits/dim)",
                       metric_value=round(bounds["null_label"]["bits_per_dim"], 4)),
            EvalResult(**common, metric_type="accuracy", metric_name="Generative classifier accuracy (argmin_y L_y)",
                       metric_value=round(bounds["classifier_accuracy"], 4)),
        ]
    measured += [EvalResult(**common, metric_type=m.type, metric_name=m.name, metric_value=round(m.value, 4))
                 for m in facts.sample_metrics]
    return ModelCardData(
        library_name="diffusers",
        license=LICENSE,
        tags=list(tags),
        pipeline_tag=pipeline_tag,
        datasets=[data.hub_id] if data.hub_id else None,
        model_name=facts.repo_id,
        eval_results=measured or None,
    )
