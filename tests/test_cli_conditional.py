"""`hf-ddpm sample`, `evaluate` and `figures` on a class-conditional model: what they write is the pipeline's own
numbers, and every bad input is one error line naming the flag."""

import csv
import json
import re

import numpy as np
import pytest
import torch
from helpers import tiny_conditional_pipeline, tiny_unet
from PIL import Image

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler
from hf_ddpm.cli import main
from hf_ddpm.data import digits_dataset
from hf_ddpm.guidance_figures import TRADEOFF_SCALES
from hf_ddpm.image_seeds import BOUND, image_generators
from hf_ddpm.images import make_grid
from hf_ddpm.metrics import classifier_outputs, load_digits_evaluator
from hf_ddpm.training.class_bounds import final_class_bounds

DIGITS = tuple(str(i) for i in range(10))
T = 20


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Saved pipelines: the digits' 10 classes with the null label 10, three named classes, three classes without a
    null label, and an unconditional one."""
    root = tmp_path_factory.mktemp("models")
    made = {"digits": tiny_conditional_pipeline(DIGITS, num_train_timesteps=T),
            "animals": tiny_conditional_pipeline(num_train_timesteps=T),
            "no_null": tiny_conditional_pipeline(null=False, num_train_timesteps=T),
            "unconditional": DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=T))}
    for name, pipe in made.items():
        pipe.save_pretrained(root / name)
    return {name: str(root / name) for name in made}


def test_sample_grid_holds_the_guided_images_of_the_named_classes(models, tmp_path, capsys):
    out = tmp_path / "grid.png"
    main(["sample", "--model", models["animals"], "--class-labels", "emu,0,dog", "--guidance-scale", "2", "--steps",
          "4", "--seed", "3", "--out", str(out)])
    pipe = DDPMDocPipeline.from_pretrained(models["animals"])
    direct = pipe(class_labels=["emu", 0, "dog"], guidance_scale=2.0, num_inference_steps=4, generator=seeded(3),
                  output_type="np")
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(make_grid(direct.images)))
    assert "guidance scale 2, classes (row-major) emu,cat,dog" in capsys.readouterr().out
    # digits' names are their ids: "7" is the class named 7
    main(["sample", "--model", models["digits"], "--class-labels", "7,3", "--steps", "2", "--out", str(out)])
    assert "classes (row-major) 7,3" in capsys.readouterr().out


@pytest.mark.parametrize("model, argv, message", [
    ("animals", ["--class-labels", "cow"], r"--class-labels holds the unknown class name 'cow'"),
    ("animals", ["--class-labels", "3"], r"--class-labels holds 3, which is not a class id"),
    ("animals", ["--class-labels", "0,1", "--num-images", "3"], r"--class-labels has 2 labels for --num-images 3"),
    ("animals", ["--guidance-scale", "nan"], r"--guidance-scale must be a finite number ≥ 0"),
    ("animals", ["--guidance-scale", "-1"], r"--guidance-scale must be a finite number ≥ 0"),
    ("no_null", ["--guidance-scale", "2"], r"--guidance-scale must be 1 for this model: it has no null label"),
    ("unconditional", ["--class-labels", "0"], r"--class-labels is for class-conditional models"),
    ("unconditional", ["--guidance-scale", "2"], r"--guidance-scale is 2.0, but this UNet takes no labels"),
])
def test_sample_bad_input_is_one_error_line_naming_the_flag(models, model, argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--model", models[model], "--steps", "1", "--out", str(tmp_path / "g.png"), *argv])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and re.match("hf-ddpm sample: error: " + message, errors[0]), errors
    assert not (tmp_path / "g.png").exists()


def held_out(count: int):
    """The ``count`` held-out digits --num-images chooses: [0, 1] images, their labels, and the images in [−1, 1]."""
    data = digits_dataset("test", num_images=count, with_labels=True)
    return (data.tensor() + 1) / 2, data.label_tensor(), data.tensor()


def test_evaluate_reports_the_conditional_marginal_null_and_guided_bounds(models, tmp_path):
    out = tmp_path / "bounds.json"
    main(["evaluate", "--model", models["digits"], "--num-images", "30", "--seed", "2", "--guidance-scale", "2",
          "--num-samples", "8", "--json", str(out)])
    record = json.loads(out.read_text())
    pipe = DDPMDocPipeline.from_pretrained(models["digits"])
    pipe.set_progress_bar_config(disable=True)
    images, labels, x0 = held_out(30)
    conditional = pipe.log_likelihood(images, class_labels=labels, generator=image_generators(2, range(30), BOUND))
    assert record["bound"]["bits_per_dim"] == pytest.approx(conditional.bits_per_dim, rel=1e-9)  # per-image noise
    guided = pipe.log_likelihood(images, class_labels=labels, guidance_scale=2.0, generator=seeded(2))
    assert record["guidance_scale"] == 2.0
    assert record["guided_bound"]["bits_per_dim"] == pytest.approx(guided.bits_per_dim, rel=1e-9)
    expected = final_class_bounds(pipe, x0, labels, conditional, seed=2, batch_size=256)
    assert record["class_bounds"]["classifier_accuracy"] == expected["classifier_accuracy"]
    for key in ("marginal", "null_label"):
        assert record["class_bounds"][key]["bits_per_dim"] == pytest.approx(expected[key]["bits_per_dim"], rel=1e-9)
    # the samples: labels cycling through the classes, guided with s = 2, judged; their label accuracy by hand
    asked = torch.arange(8) % 10
    samples = pipe(class_labels=asked, guidance_scale=2.0, num_inference_steps=T,
                   generator=image_generators(2, range(8)), output_type="pt").images  # sample i: seeded by (2, i)
    _, probs = classifier_outputs(samples, load_digits_evaluator()[0], progress=False)
    assert record["sample_quality"]["label_accuracy"] == np.mean(probs.argmax(axis=1) == asked.numpy())


@pytest.mark.parametrize("model, argv, message", [
    ("unconditional", ["--guidance-scale", "2"], r"--guidance-scale is 2.0, but this model takes no labels"),
    ("digits", ["--guidance-scale", "inf"], r"--guidance-scale must be a finite number ≥ 0"),
    ("no_null", ["--guidance-scale", "0"], r"--guidance-scale must be 1 for this model: it has no null label"),
    ("animals", [], r"--label-column 'label' of digits does not hold the model's classes: holds \d+, which is not a "
                    r"class id"),
])
def test_evaluate_bad_input_is_one_error_line_naming_the_flag(models, model, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", models[model], "--num-images", "20", *argv])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and re.match("hf-ddpm evaluate: error: " + message, errors[0]), errors


def test_figures_of_a_conditional_model_hold_the_guidance_tradeoff(models, tmp_path):
    out = tmp_path / "figures"
    main(["figures", "--model", models["digits"], "--num-images", "6", "--out", str(out), "--steps", "none",
          "--guidance-samples", "0", "--guidance-steps", "2", "--grid-samples", "1", "--seed", "4"])
    with open(out / "guidance_tradeoff.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["guidance_scale"]) for row in rows] == list(TRADEOFF_SCALES)
    pipe = DDPMDocPipeline.from_pretrained(models["digits"])
    pipe.set_progress_bar_config(disable=True)
    images, labels, _ = held_out(6)
    for row in rows[::3]:
        bound = pipe.log_likelihood(images, class_labels=labels, guidance_scale=float(row["guidance_scale"]),
                                    num_inference_steps=2, generator=seeded(4))
        assert float(row["bits_per_dim"]) == pytest.approx(bound.bits_per_dim, rel=1e-9)
        assert row["fd"] == row["label_accuracy"] == ""  # --guidance-samples 0: the bound only
    summary = json.loads((out / "figures.json").read_text())
    rd = pipe.rate_distortion(images, class_labels=labels, generator=seeded(4))
    assert summary["rate_distortion"] == rd.summary()  # the conditional bound's pass
    assert summary["guidance"]["class_grid"]["classes"] == list(DIGITS)
    with pytest.raises(SystemExit):
        main(["figures", "--model", models["digits"], "--guidance-timesteps", "2", "--out", str(tmp_path / "x")])
