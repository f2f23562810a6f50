"""`hf-ddpm sample` / `hf-ddpm evaluate` against a tiny pipeline saved by the test."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import tiny_unet
from PIL import Image

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler
from hf_ddpm.cli import main
from hf_ddpm.image_seeds import BOUND, image_generators
from hf_ddpm.images import make_grid
from hf_ddpm.likelihood import bits_per_dim, bound_plan, estimate_bound

T = 20


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-pipeline")
    DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=T)).save_pretrained(folder)
    return str(folder)


def _sample(model_dir, out, *extra):
    main(["sample", "--model", model_dir, "--num-images", "10", "--steps", "5", "--out", str(out), *extra])
    return np.asarray(Image.open(out))


def test_sample_grid_holds_the_pipelines_images(model_dir, tmp_path):
    grid = _sample(model_dir, tmp_path / "a.png", "--seed", "3")
    assert grid.shape == (3 * 8, 4 * 8)  # 10 images, ⌈√10⌉ = 4 per row → 3 rows of 8×8 grey tiles
    pipe = DDPMDocPipeline.from_pretrained(model_dir)
    direct = pipe(batch_size=10, generator=torch.Generator().manual_seed(3), num_inference_steps=5, output_type="np")
    expected = np.rint(direct.images[..., 0] * 255).astype(np.uint8)
    for index in range(10):
        row, column = divmod(index, 4)
        np.testing.assert_array_equal(grid[row * 8 : row * 8 + 8, column * 8 : column * 8 + 8], expected[index])
    assert not grid[16:, 16:].any()  # the two empty cells of the last row


def test_sample_is_reproducible_by_seed_and_nrow_sets_the_layout(model_dir, tmp_path):
    first = _sample(model_dir, tmp_path / "a.png", "--seed", "5")
    again = _sample(model_dir, tmp_path / "b.png", "--seed", "5")
    other = _sample(model_dir, tmp_path / "c.png", "--seed", "6")
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    wide = _sample(model_dir, tmp_path / "d.png", "--seed", "5", "--nrow", "5")
    assert wide.shape == (2 * 8, 5 * 8)
    np.testing.assert_array_equal(wide[:8, :32], first[:8, :32])  # same images, other layout


def _digits_test_x0() -> torch.Tensor:
    """The 359 held-out digits in [−1, 1], computed from scikit-learn's raw data."""
    from sklearn.datasets import load_digits

    raw = load_digits().images[4::5]
    return torch.from_numpy(np.round(raw * 255.0 / 16.0) / 127.5 - 1.0).float()[:, None]


def _evaluate(model_dir, tmp_path, *extra):
    out = tmp_path / "bound.json"
    main(["evaluate", "--model", model_dir, "--batch-size", "512", "--json", str(out), *extra])
    return json.loads(out.read_text())


def test_evaluate_equals_bits_per_dim_computed_directly(model_dir, tmp_path, capsys):
    plot = tmp_path / "lt.png"
    record = _evaluate(model_dir, tmp_path, "--seed", "1", "--plot", str(plot))
    pipe = DDPMDocPipeline.from_pretrained(model_dir)
    bound = bits_per_dim(pipe.unet, pipe.scheduler, _digits_test_x0(), generator=image_generators(1, range(359), BOUND))
    summary = record["bound"]
    assert (record["split"], summary["num_images"], summary["num_timesteps"]) == ("test", 359, T)
    assert summary["bits_per_dim"] == pytest.approx(bound.mean(), rel=1e-6)
    np.testing.assert_allclose(summary["terms"], bound.terms.mean(0).numpy(), rtol=1e-6)
    assert summary["prior"] == pytest.approx(float(bound.prior.mean()), rel=1e-6)
    assert summary["decoder"] == pytest.approx(float(bound.terms[:, 0].mean()), rel=1e-6)
    assert summary["rate"] == pytest.approx(float(bound.terms[:, 1:].sum(1).mean()), rel=1e-6)
    assert summary["standard_error"] == pytest.approx(float(bound.total.std() / np.sqrt(359)), rel=1e-5)
    printed = capsys.readouterr().out
    assert f"bound: {bound.mean():.4f}" in printed and "L_0 (decoder)" in printed
    plotted = np.asarray(Image.open(plot).convert("L"))
    assert plotted.shape[0] > 100 and plotted.std() > 0  # a drawn figure, not a blank canvas


def test_evaluate_on_a_timestep_subset_is_the_importance_estimate(model_dir, tmp_path):
    """--timesteps 6: the plan of ``bound_plan`` with the seed (the chain's first two steps exactly and 4 draws by
    importance from the pipeline's proposal, here a pilot pass: the model was saved without one) and each image's noise
    from its generator seeded by (seed, index); the JSON holds the plan's weights, and the estimate is
    prior + Σ_k w_k L̄_k."""
    record = _evaluate(model_dir, tmp_path, "--timesteps", "6", "--num-images", "359", "--seed", "2")
    pipe = DDPMDocPipeline.from_pretrained(model_dir)
    x0 = _digits_test_x0()
    plan = bound_plan(pipe.unet, pipe.scheduler, x0, num_timesteps=6, generator=torch.Generator().manual_seed(2),
                      batch_size=256)
    assert plan.proposal.startswith("a pilot pass") and len(plan.draws) == 4
    parts = record["bound"]
    assert parts["timesteps"] == plan.timesteps.tolist()
    assert parts["weights"] == pytest.approx(plan.weights.tolist(), rel=1e-6)  # the pilot's terms, from float32
    bound = estimate_bound(pipe.unet, pipe.scheduler, x0, plan, generator=image_generators(2, range(len(x0)), BOUND))
    assert parts["bits_per_dim"] == pytest.approx(bound.bits_per_dim, rel=1e-6)
    weighted = parts["prior"] + sum(w * term for w, term in zip(parts["weights"], parts["terms"]))
    assert weighted == pytest.approx(parts["bits_per_dim"], rel=1e-9)
    assert parts["prior"] + parts["decoder"] + parts["rate"] == pytest.approx(parts["bits_per_dim"], rel=1e-9)


@pytest.fixture(scope="module")
def bad_folders(tmp_path_factory):
    """An image folder holding a file that is not an image, and one of two plain grey images (no test split)."""
    root = tmp_path_factory.mktemp("bad")
    (root / "corrupt" / "train").mkdir(parents=True)
    (root / "corrupt" / "train" / "broken.png").write_bytes(b"not a png")
    (root / "plain" / "train").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((8, 8), 60 * i, np.uint8)).save(root / "plain" / "train" / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--timesteps", "3"], r"--timesteps must be 'all' or an integer in \[4, 20\]"),
        (["--split", "validation"], r"--split must be 'train' or 'test' for the digits, got 'validation'"),
        (["--train-data-dir", "{bad}/corrupt", "--split", "train"], r"--train-data-dir '.*corrupt': image 0 \(file .*broken\.png\).* "
                                                r"cannot be decoded"),
        (["--dataset", "tiny-org/not-cached"], r"--dataset 'tiny-org/not-cached': could not be loaded"),
        (["--train-data-dir", "{bad}/plain", "--image-column", "pixels"], r"--image-column 'pixels' is not a column"),
        (["--train-data-dir", "{bad}/plain", "--validation-fraction", "1.5"],
         r"--validation-fraction must be in \(0, 1\)"),
        (["--train-data-dir", "{bad}/nowhere"], r"--train-data-dir '.*nowhere': is not a directory"),
        (["--num-samples", "-1"], r"argument --num-samples: must be an integer ≥ 0, got -1"),
    ],
)
def test_evaluate_bad_input_is_one_error_line_naming_the_flag(model_dir, bad_folders, argv, message, capsys,
                                                              monkeypatch):
    """Every refusal of `hf-ddpm evaluate` — the command's own, the data library's (named by its parameters, e.g.
    train_data_dir) — is one `error:` line naming this command's flag, with exit status 2 and no traceback."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", model_dir, *[a.format(bad=bad_folders) for a in argv]])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and re.match("hf-ddpm evaluate: error: " + message, errors[0]), errors


def test_evaluate_refuses_data_with_other_channels_and_a_missing_model(model_dir, tmp_path, capsys):
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(rgb / f"{i}.png")
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", model_dir, "--train-data-dir", str(rgb), "--split", "train"])
    assert "has 3 channel(s) but --model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sample", "--model", str(tmp_path / "nothing-here"), "--num-images", "1"])
    assert "--model" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_command(model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "m.png"
    subprocess.run(
        [sys.executable, "-m", "hf_ddpm", "sample", "--model", model_dir, "--num-images", "4", "--steps", "3",
         "--seed", "9", "--out", str(out)],
        check=True, env=env, capture_output=True,
    )
    pipe = DDPMDocPipeline.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(9)
    images = pipe(batch_size=4, generator=generator, num_inference_steps=3, output_type="np").images
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(make_grid(images)))


def test_evaluate_defaults_to_the_held_out_images_of_the_training_run(tmp_path):
    """Without data flags, `evaluate` reads the model's training_run.json and evaluates the very images training
    held out (same folder, fraction and seed) — never images the model was trained on."""
    from hf_ddpm.data import load_image_data

    rng = np.random.default_rng(5)
    folder = tmp_path / "images" / "train"
    folder.mkdir(parents=True)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    model = tmp_path / "model"
    pipe = DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=T))
    pipe.save_pretrained(model)
    settings = {"train_data_dir": str(tmp_path / "images"), "validation_fraction": 0.25, "seed": 3}
    (model / "training_run.json").write_text(json.dumps({"settings": settings}))
    record = _evaluate(str(model), tmp_path, "--seed", "4")
    assert record["split"] == "train[validation_fraction=0.25, seed=3]"
    trained = load_image_data(train_data_dir=str(tmp_path / "images"), validation_fraction=0.25, seed=3)
    bound = bits_per_dim(pipe.unet, pipe.scheduler, trained.eval.tensor(), generator=image_generators(4, range(4), BOUND))
    assert record["bound"]["num_images"] == 4
    assert record["bound"]["bits_per_dim"] == pytest.approx(bound.mean(), rel=1e-6)


CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "--out", "{tmp}/missing/grid.png"], r"argument --out: '.*grid\.png': the folder '.*missing' does "
                                                         r"not exist"),
        (["sample", "--out", "{tmp}/grid.xyz"], r"argument --out: '.*grid\.xyz': PIL writes no '\.xyz' image \(give "
                                                r"one of .*\.png"),
        (["sample", "--out", "{tmp}"], r"argument --out: '.*' is a folder: give a file name"),
        (["sample", "--steps", "50"], r"--steps must be an integer in \[1, 20\] \(num_train_timesteps\), got 50"),
        (["sample", "--eta", "0.5"], r"--eta is 0\.5, but DDPMDocScheduler\.step takes no eta"),
        (["sample", "--device", "banana"], r"argument --device: 'banana' is not a torch device"),
        pytest.param(["sample", "--device", "cuda"], r"argument --device: 'cuda': this machine has no CUDA device",
                     marks=CUDA),
        (["evaluate", "--json", "{tmp}/missing/out.json"], r"argument --json: '.*out\.json': the folder '.*missing' "
                                                           r"does not exist"),
        (["evaluate", "--plot", "{tmp}/terms.txt"], r"argument --plot: '.*terms\.txt': matplotlib writes no '\.txt' "
                                                    r"plot \(give one of .*\.pdf.*\.png"),
        (["figures", "--steps", "0,5"], r"--steps must be 'none' or comma-separated numbers of steps in \[1, 20\] "
                                        r"\(the model's T\), got '0,5'"),
        (["figures", "--steps", "5,50"], r"--steps must be 'none' or comma-separated numbers of steps in \[1, 20\]"),
        (["figures", "--num-samples", "-1"], r"argument --num-samples: must be an integer ≥ 0, got -1"),
        (["figures", "--guidance-samples", "-2"], r"argument --guidance-samples: must be an integer ≥ 0, got -2"),
        (["figures", "--device", "cuda:x"], r"argument --device: 'cuda:x' is not a torch device"),
        (["reference-stats", "--dataset", "digits", "--out", "{tmp}/missing/stats.npz"],
         r"argument --out: '.*stats\.npz': the folder '.*missing' does not exist"),
    ],
)
def test_every_subcommand_refuses_what_it_cannot_write_or_run_before_any_work(model_dir, tmp_path, argv, message,
                                                                              capsys, monkeypatch):
    """Outputs that could not be written at the end (a missing or unwritable folder, a folder, a suffix no writer
    knows), devices this machine lacks, and settings the model cannot take are one `error:` line naming the
    subcommand's own flag (sample's --steps, not the library's num_inference_steps), exit status 2, before any work:
    nothing is written."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    command, *flags = [arg.format(tmp=tmp_path) for arg in argv]
    model = [] if command == "reference-stats" else ["--model", model_dir]
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main([command, *model, *flags])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and re.match(f"hf-ddpm {command}: error: " + message, errors[0]), errors
    assert sorted(tmp_path.rglob("*")) == before
