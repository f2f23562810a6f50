"""The guidance figures of a class-conditional model (``hf_ddpm.guidance_figures``, and what ``hf_ddpm.figures`` does
with labels), checked by their numbers: each row of the trade-off against the pipeline's own calls and a label accuracy
counted by hand, the class grid against the pipeline's samples; and the label accuracy of ``hf_ddpm.metrics``."""

import csv
import json

import numpy as np
import pytest
import torch
from helpers import tiny_conditional_pipeline

from hf_ddpm.data import digits_dataset
from hf_ddpm.errors import ParameterError
from hf_ddpm.figures import write_figures
from hf_ddpm.guidance_figures import (GRID_SCALES, GUIDANCE_TRADEOFF_CSV, TRADEOFF_COLUMNS, TRADEOFF_SCALES,
                                      balanced_labels, class_grid, guidance_tradeoff, write_guidance_figures)
from hf_ddpm.metrics import classifier_outputs, load_digits_evaluator, sample_quality
from hf_ddpm.metrics.quality import classifier_indices
from hf_ddpm.metrics.statistics import label_accuracy

DIGIT_CLASSES = ("0", "1", "2")  # named like the digits, so that the digits evaluator judges them


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipe():
    return tiny_conditional_pipeline(DIGIT_CLASSES, num_train_timesteps=20)  # ≥ the progressive figure's 10 columns


@pytest.fixture(scope="module")
def held_out():
    """Six held-out digits of the classes 0, 1, 2 in [0, 1], with their labels."""
    data = digits_dataset("test", with_labels=True)
    keep = np.flatnonzero(data.labels < 3)[:6]
    return (data.tensor()[keep] + 1) / 2, torch.from_numpy(data.labels[keep])


# ---------------------------------------------------------------------------------------------- label accuracy


def test_label_accuracy_is_the_share_classified_as_asked():
    probs = torch.softmax(torch.randn(50, 4, generator=seeded(0)), dim=1).numpy()
    requested = torch.randint(4, (50,), generator=seeded(1)).numpy()
    assert label_accuracy(probs, requested) == np.mean([probs[i].argmax() == requested[i] for i in range(50)])
    with pytest.raises(ValueError, match="one class index"):
        label_accuracy(probs, requested[:3])
    with pytest.raises(ValueError, match="one class index"):
        label_accuracy(probs, np.full(50, 4))


def test_class_names_map_to_the_classifiers_outputs():
    net, _ = load_digits_evaluator()
    assert classifier_indices(["3", "0", "9"], net) == [3, 0, 9]  # the digits evaluator's outputs are the digits
    net.model.config.id2label = {0: "cat", 1: "dog"}
    net.model.config.num_labels = 2
    assert classifier_indices(["dog", "cat", "1"], net) == [1, 0, 1]
    with pytest.raises(ParameterError, match="has no class 'emu'") as error:
        classifier_indices(["emu"], net)
    assert error.value.parameter == "classifier"


def test_sample_quality_reports_the_label_accuracy_of_the_asked_classes(held_out):
    images, labels = held_out
    asked = [str(int(y)) for y in labels]
    quality = sample_quality(images, images, requested_classes=asked, progress=False)
    net, _ = load_digits_evaluator()
    _, probs = classifier_outputs(images, net, progress=False)
    assert quality["label_accuracy"] == np.mean(probs.argmax(axis=1) == labels.numpy())
    assert sample_quality(images, images, progress=False)["label_accuracy"] is None


# -------------------------------------------------------------------------------------------------- the trade-off


def test_each_row_is_the_pipelines_samples_judged_and_its_guided_bound(pipe, held_out):
    """A row at s: the quality of samples drawn with s (labels cycling through the classes, from the seed), its label
    accuracy counted from the evaluator's probabilities, and bits_per_dim = log_likelihood(…, guidance_scale=s) of the
    held-out images with their labels on the same chain."""
    images, labels = held_out
    rows = guidance_tradeoff(pipe, images, labels, (0.0, 2.5), num_samples=6, num_inference_steps=4,
                             num_timesteps=None, seed=3)
    assert [row["guidance_scale"] for row in rows] == [0.0, 2.5]
    net, _ = load_digits_evaluator()
    for row in rows:
        s = row["guidance_scale"]
        bound = pipe.log_likelihood(images, class_labels=labels, guidance_scale=s, num_inference_steps=4,
                                    generator=seeded(3))
        assert row["bits_per_dim"] == pytest.approx(bound.bits_per_dim, rel=1e-12)
        assert row["standard_error"] == pytest.approx(bound.standard_error, rel=1e-9)
        asked = torch.tensor([0, 1, 2, 0, 1, 2])
        samples = pipe(class_labels=asked, guidance_scale=s, num_inference_steps=4, generator=seeded(3),
                       output_type="pt").images
        quality = sample_quality(samples, images, progress=False)
        assert (row["fd"], row["score"], row["precision"], row["recall"]) == \
            (quality["fd"], quality["inception_score"], quality["precision"], quality["recall"])
        _, probs = classifier_outputs(samples, net, progress=False)
        assert row["label_accuracy"] == np.mean(probs.argmax(axis=1) == asked.numpy())
        assert (row["num_samples"], row["num_inference_steps"]) == (6, 4)
    assert rows[0]["bits_per_dim"] != rows[1]["bits_per_dim"]  # the guided chain is another chain


def test_the_bound_only_and_bad_arguments(pipe, held_out):
    images, labels = held_out
    rows = guidance_tradeoff(pipe, images, labels, (1.0,), num_samples=0, num_inference_steps=2, num_timesteps=None)
    assert rows[0]["fd"] is rows[0]["label_accuracy"] is None and rows[0]["bits_per_dim"] > 0
    for kwargs, parameter in [(dict(num_samples=2), "num_samples"), (dict(num_samples=-1), "num_samples")]:
        with pytest.raises(ParameterError) as error:
            guidance_tradeoff(pipe, images, labels, (1.0,), **kwargs)
        assert error.value.parameter == parameter
    for scales, parameter in [((float("nan"),), "guidance_scale"), ((-1.0,), "guidance_scale")]:
        with pytest.raises(ParameterError) as error:
            guidance_tradeoff(pipe, images, labels, scales, num_samples=0, num_inference_steps=2)
        assert error.value.parameter == parameter
    with pytest.raises(ParameterError, match="has 5 labels for 6 images"):
        guidance_tradeoff(pipe, images, labels[:5], num_samples=0)
    with pytest.raises(ParameterError, match="null label") as error:
        guidance_tradeoff(tiny_conditional_pipeline(DIGIT_CLASSES, null=False), images, labels, num_samples=0)
    assert error.value.parameter == "pipeline"


def test_the_class_grid_holds_each_scales_samples_from_one_seed(pipe):
    grid = class_grid(pipe, samples_per_class=2, num_inference_steps=3, seed=5)
    assert grid.shape == (3, 2 * len(GRID_SCALES), 1, 8, 8)
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    for j, s in enumerate(GRID_SCALES):
        images = pipe(class_labels=ids, guidance_scale=s, num_inference_steps=3, generator=seeded(5),
                      output_type="pt").images
        torch.testing.assert_close(grid[:, 2 * j : 2 * j + 2], images.view(3, 2, 1, 8, 8), rtol=0, atol=0)
    assert balanced_labels(pipe.conditioning, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_the_files_hold_the_rows(pipe, held_out, tmp_path):
    images, labels = held_out
    summary = write_guidance_figures(pipe, images, labels, tmp_path, seed=1, grid_samples=1, num_samples=4,
                                     num_inference_steps=2, num_timesteps=None)
    rows = summary["guidance_tradeoff"]
    assert [row["guidance_scale"] for row in rows] == list(TRADEOFF_SCALES)
    with open(tmp_path / GUIDANCE_TRADEOFF_CSV, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == TRADEOFF_COLUMNS
        written = [{key: float(value) for key, value in line.items()} for line in reader]
    assert written == [{key: row[key] for key in TRADEOFF_COLUMNS} for row in rows]
    assert summary["class_grid"] == {"guidance_scales": list(GRID_SCALES), "samples_per_class": 1,
                                     "classes": list(DIGIT_CLASSES), "num_inference_steps": 2}
    assert set(summary["seconds"]) == {"class_grid", "guidance_tradeoff"}


# ------------------------------------------------------------------------------------- the figures with labels


def test_the_paper_figures_of_a_conditional_model_use_the_labels(pipe, held_out, tmp_path):
    """figures.json's rate–distortion is the conditional bound's (the images' own labels), and the guidance figures
    join it; without labels the figures are refused before any work."""
    images, labels = held_out
    summary = write_figures(pipe, images, tmp_path, seed=2, class_labels=labels,
                            guidance_options=dict(grid_samples=1, num_samples=0, num_inference_steps=2))
    assert json.loads((tmp_path / "figures.json").read_text()) == summary
    rd = pipe.rate_distortion(images, generator=seeded(2), class_labels=labels)
    assert summary["rate_distortion"] == rd.summary()
    assert rd.bound.bits_per_dim == pytest.approx(pipe.log_likelihood(images, class_labels=labels,
                                                                      noise=rd_noise(images)).bits_per_dim, rel=1e-12)
    assert [row["guidance_scale"] for row in summary["guidance"]["guidance_tradeoff"]] == list(TRADEOFF_SCALES)
    assert {"class_grid", "guidance_tradeoff"} <= set(summary["seconds"])
    with pytest.raises(ParameterError, match="held-out images' labels") as error:
        write_figures(pipe, images, tmp_path / "none")
    assert error.value.parameter == "class_labels" and not (tmp_path / "none").exists()


def rd_noise(images: torch.Tensor) -> torch.Tensor:
    """The ε the rate–distortion pass draws from seed 2: its first draw, in the images' shape."""
    return torch.randn(images.shape, generator=seeded(2))


def test_a_model_without_a_null_label_gets_the_paper_figures_with_labels_and_no_guidance(held_out, tmp_path):
    """No null label: nothing may run the null branch (the interpolation decodes each pair with its first image's
    label; without labels it would be refused), the rate–distortion pass is the conditional bound's, and there are no
    guidance figures."""
    pipe = tiny_conditional_pipeline(DIGIT_CLASSES, null=False, num_train_timesteps=20)
    images, labels = held_out
    summary = write_figures(pipe, images, tmp_path, seed=2, class_labels=labels)
    assert summary["guidance"] is None and not (tmp_path / GUIDANCE_TRADEOFF_CSV).exists()
    assert summary["rate_distortion"] == pipe.rate_distortion(images, generator=seeded(2), class_labels=labels).summary()
    with pytest.raises(ParameterError, match="has none"):
        pipe.interpolate(images[0:2], images[2:4], generator=seeded(2))
