"""`hf-ddpm evaluate` across processes and from files: two processes give one process's numbers, saved samples
score as the samples drawn in process, --reference stats stand in for the held-out images, and bad files are one
clear line."""

import json
import re

import numpy as np
import pytest
from helpers import tiny_unet
from test_metrics_models import _tiny_dinov2
from training_support import accelerate_launch

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler
from hf_ddpm.cli import main

QUALITY = ["--num-samples", "12", "--num-inference-steps", "3", "--seed", "4"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-pipeline")
    DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=20)).save_pretrained(folder)
    return str(folder)


def _evaluate(tmp_path, name, *argv) -> dict:
    out = tmp_path / f"{name}.json"
    main(["evaluate", *argv, "--json", str(out)])
    return json.loads(out.read_text())


def test_two_processes_give_the_numbers_of_one(model_dir, tmp_path):
    argv = ["--model", model_dir, "--timesteps", "5", "--batch-size", "64", *QUALITY]
    result = accelerate_launch(["-m", "hf_ddpm", "evaluate", *argv, "--json", str(tmp_path / "two.json")],
                               {"ACCELERATE_USE_CPU": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    one = _evaluate(tmp_path, "one", *argv)
    for key in ("bits_per_dim", "standard_error", "prior", "decoder", "rate"):
        assert two["bound"][key] == pytest.approx(one["bound"][key], rel=1e-6, abs=1e-9), key
    assert two["bound"]["num_images"] == one["bound"]["num_images"] == 359
    assert two["bound"]["timesteps"] == one["bound"]["timesteps"]
    for key in ("fd", "inception_score", "precision", "recall"):
        assert two["sample_quality"][key] == pytest.approx(one["sample_quality"][key], rel=1e-6), key
    assert two["sample_quality"]["class_histogram"] == one["sample_quality"]["class_histogram"]


def test_saved_samples_score_as_the_samples_drawn_in_process(model_dir, tmp_path):
    main(["sample", "--model", model_dir, "--num-images", "12", "--steps", "3", "--seed", "4", "--out-dir",
          str(tmp_path / "png"), "--batch-size", "5"])
    main(["sample", "--model", model_dir, "--num-images", "12", "--steps", "3", "--seed", "4", "--out-dir",
          str(tmp_path / "npz"), "--format", "npz"])
    drawn = _evaluate(tmp_path, "drawn", "--model", model_dir, *QUALITY, "--no-bound")["sample_quality"]
    npz = str(tmp_path / "npz" / "samples_12x8x8x1.npz")
    for source in (str(tmp_path / "png"), npz):
        saved = _evaluate(tmp_path, "saved", "--model", model_dir, "--samples", source, "--no-bound")["sample_quality"]
        for key in ("fd", "inception_score", "precision", "recall", "class_histogram", "num_samples"):
            assert saved[key] == drawn[key], (source, key)
        assert saved["samples"] == source and drawn["num_inference_steps"] == 3


def test_reference_stats_stand_in_for_the_held_out_images(model_dir, tmp_path):
    stats_path = str(tmp_path / "stats.npz")
    main(["reference-stats", "--dataset", "digits", "--split", "test", "--out", stats_path])
    main(["sample", "--model", model_dir, "--num-images", "12", "--steps", "3", "--seed", "4", "--out-dir",
          str(tmp_path / "png")])
    against_images = _evaluate(tmp_path, "images", "--model", model_dir, "--samples", str(tmp_path / "png"),
                               "--no-bound")["sample_quality"]
    against_stats = _evaluate(tmp_path, "stats", "--model", model_dir, "--samples", str(tmp_path / "png"),
                              "--reference", stats_path, "--no-bound")["sample_quality"]
    assert against_stats["fd"] == pytest.approx(against_images["fd"], rel=1e-9)
    assert against_stats["precision"] is None and against_stats["num_reference"] == 359
    assert against_stats["inception_score"] == against_images["inception_score"]


@pytest.fixture(scope="module")
def bad(model_dir, tmp_path_factory) -> str:
    """Samples and stats that evaluate must refuse, and good samples beside them."""
    root = tmp_path_factory.mktemp("bad")
    (root / "empty").mkdir()
    (root / "corrupt").mkdir()
    (root / "corrupt" / "000000.png").write_bytes(b"not a png")
    np.savez(root / "wrong.npz", arr_0=np.zeros((4, 3, 8, 8), np.uint8))  # channels first
    (root / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    for name in ("good", "incomplete"):
        main(["sample", "--model", model_dir, "--num-images", "4", "--steps", "2", "--shard-size", "2", "--out-dir",
              str(root / name)])
    (root / "incomplete" / "shards" / "shard_000001.json").unlink()
    dinov2 = root / "tiny-dinov2"
    _tiny_dinov2(dinov2)
    main(["reference-stats", "--dataset", "digits", "--split", "test", "--num-images", "20", "--feature-model",
          str(dinov2), "--out", str(root / "dinov2.npz")])
    return str(root)


@pytest.mark.parametrize("flags, message", [
    (["--samples", "{bad}/empty"], r"--samples '.*empty' holds no \.png images"),
    (["--samples", "{bad}/corrupt"], r"--samples '.*000000\.png' could not be read as an image"),
    (["--samples", "{bad}/wrong.npz"], r"--samples '.*wrong\.npz': arr_0 is uint8 of shape \(4, 3, 8, 8\); expected"),
    (["--samples", "{bad}/broken.npz"], r"--samples '.*broken\.npz' is not a readable \.npz file"),
    (["--samples", "{bad}/incomplete"], r"--samples '.*incomplete' is incomplete: 1 of 2 shards are missing"),
    (["--samples", "{bad}/good", "--reference", "{bad}/dinov2.npz"],
     r"--reference '.*dinov2\.npz' was computed with the features of '.*tiny-dinov2', but this evaluation uses "
     r"'hf-ddpm digits evaluator v\d+'"),
    (["--samples", "{bad}/good", "--num-samples", "4"], r"--samples scores saved samples: leave --num-samples out"),
])
def test_bad_samples_and_stats_get_one_clear_line(model_dir, bad, flags, message, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", model_dir, "--no-bound", *[flag.format(bad=bad) for flag in flags]])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert exit_info.value.code == 2 and len(errors) == 1 and re.search(message, errors[0]), errors
