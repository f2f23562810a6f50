"""The paper's figures as files: ``hf_ddpm.figures``, ``hf-ddpm figures`` and the trainer's ``--figures``, checked
by what the files say (the numbers, the layout of the grids, the run record), not by how they look."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import tiny_unet
from training_support import train_tiny

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler
from hf_ddpm.cli import main
from hf_ddpm.data import digits_dataset
from hf_ddpm.figures import add_to_record, write_figures
from hf_ddpm.images import to_uint8
from hf_ddpm.plotting import PIXELS_PER_CELL, tile
from hf_ddpm.steps_tradeoff import DEFAULT_STEPS
from hf_ddpm.training.config import RunConfig
from hf_ddpm.training.record import RunRecord

T = 20


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def held_out(count: int | None = None) -> torch.Tensor:
    """The digits' held-out split as [N, 1, 8, 8] in [0, 1] (what hf-ddpm figures reads by default)."""
    return (digits_dataset("test", num_images=count).tensor() + 1) / 2


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [{key: float(value) if key != "t" else int(value) for key, value in row.items()}
                for row in csv.DictReader(handle)]


def test_files_hold_the_pipelines_numbers(tmp_path):
    """rate_distortion.csv is the table of ``pipe.rate_distortion`` for the same seed, figures.json its summary and
    the figures' timesteps (the paper's t), and the returned summary is figures.json."""
    pipe = DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=T))
    pipe.set_progress_bar_config(disable=True)
    x = held_out(8)
    summary = write_figures(pipe, x, tmp_path, seed=5, settings={"model": "tiny"})
    assert json.loads((tmp_path / "figures.json").read_text()) == summary
    rd = pipe.rate_distortion(x, generator=seeded(5))
    assert read_csv(tmp_path / "rate_distortion.csv") == rd.rows()
    assert summary["rate_distortion"] == rd.summary()
    settings = summary["settings"]
    assert settings["model"] == "tiny" and settings["seed"] == 5 and settings["num_images"] == 8
    progressive = pipe.progressive(8, num_columns=10, num_inference_steps=T, generator=seeded(5))
    assert settings["timesteps"]["progressive"] == (progressive.timesteps + 1).tolist()
    assert settings["timesteps"]["shared_latents"] == [T, 3 * T // 4, T // 2, T // 4]
    assert settings["timesteps"]["interpolation"] == [T // 4, T // 2, 3 * T // 4]
    assert set(summary["seconds"]) == {"progressive", "shared_latents", "interpolation", "rate_distortion"}
    assert sorted(os.listdir(tmp_path)) == ["figures.json", "interpolation.png", "progressive.png",
                                            "rate_distortion.csv", "rate_distortion.png", "shared_latents.png"]


def test_a_grid_holds_row_r_column_c_in_its_cell():
    """The figures' grids: 2-pixel grey borders, cells enlarged to PIXELS_PER_CELL; cell (r, c) is image [r, c]."""
    images = torch.rand(3, 4, 1, 8, 8, generator=seeded(0))
    grid = np.asarray(tile(images))
    scale = PIXELS_PER_CELL // 8
    assert grid.shape == ((3 * 8 + 4 * 2) * scale, (4 * 8 + 5 * 2) * scale)
    expected = to_uint8(images.flatten(0, 1))[..., 0]
    for index, image in enumerate(expected):
        row, column = divmod(index, 4)
        top, left = (2 + row * 10) * scale, (2 + column * 10) * scale
        np.testing.assert_array_equal(grid[top : top + 8 * scale : scale, left : left + 8 * scale : scale], image)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config):
    """A tiny training run on the digits that ends with the figures."""
    out = tmp_path_factory.mktemp("run") / "out"
    record = train_tiny(tiny_config, out, max_train_steps=1, eval_samples=0, figures=True)
    return out, record


def test_a_run_with_figures_records_them(trained):
    """--figures: the progressive figure joins the record's images, the summary its results (and metrics.json), and
    that summary is the rate–distortion of the held-out digits under the run's seed."""
    out, record = trained
    summary = json.loads((out / "figures" / "figures.json").read_text())
    assert record.images["progressive"] == "figures/progressive.png"
    assert record.results.figures == summary == json.loads((out / "metrics.json").read_text())["figures"]
    assert RunRecord.load(out).results.figures == summary
    pipe = DDPMDocPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    rd = pipe.rate_distortion(held_out(), generator=seeded(3))  # tiny_settings' seed
    assert summary["rate_distortion"] == rd.summary() and summary["settings"]["num_images"] == 359
    # the trainer draws the card's figure and the rate–distortion table; Figs. 7–8 are hf-ddpm figures'
    assert sorted(os.listdir(out / "figures")) == ["figures.json", "progressive.png", "rate_distortion.csv",
                                                   "rate_distortion.png"]


def test_figures_default_to_the_digits_only():
    assert RunConfig().draws_figures
    assert not RunConfig.from_settings({"dataset_name": "cifar10"}).draws_figures
    assert RunConfig.from_settings({"dataset_name": "cifar10", "figures": True}).draws_figures
    assert not RunConfig.from_settings({"figures": False}).draws_figures


def test_the_command_writes_into_the_model_and_updates_its_record(trained, tmp_path, capsys):
    out, record = trained
    RunRecord(record.config, record.results, {"samples": "samples.png"}).save(out)
    main(["figures", "--model", str(out), "--out", str(out / "again"), "--num-images", "6", "--seed", "3",
          "--num-samples", "8"])
    summary = json.loads((out / "again" / "figures.json").read_text())
    # the K table: the bound of exactly the K-step sampler (K = T: the rate–distortion pass's bound, not evaluated
    # again), and the quality of 8 samples drawn with K steps
    pipe = DDPMDocPipeline.from_pretrained(out)
    T = pipe.scheduler.config.num_train_timesteps
    with open(out / "again" / "steps_tradeoff.csv", newline="") as handle:
        rows = {int(row["num_inference_steps"]): row for row in csv.DictReader(handle)}
    assert sorted(rows, reverse=True) == [k for k in DEFAULT_STEPS if k <= T] and T in rows
    assert float(rows[T]["bits_per_dim"]) == pytest.approx(summary["rate_distortion"]["bits_per_dim"], rel=1e-12)
    images = digits_dataset("test", num_images=6).tensor()  # what --num-images 6 chooses from the digits' test split
    for k in rows:
        if k < T:
            expected = pipe.log_likelihood((images + 1) / 2, num_inference_steps=k,
                                           generator=torch.Generator().manual_seed(3)).mean()
            assert float(rows[k]["bits_per_dim"]) == pytest.approx(expected, rel=1e-9)
    assert all(int(row["num_samples"]) == 8 and float(row["fd"]) > 0 for row in rows.values())
    assert [row["num_inference_steps"] for row in summary["steps_tradeoff"]] == sorted(rows, reverse=True)
    assert summary["settings"]["num_images"] == 6 and summary["settings"]["data_chosen_by"].startswith("the training")
    updated = RunRecord.load(out)
    assert updated.images == {"samples": "samples.png", "progressive": "again/progressive.png"}
    assert updated.results.figures == summary and updated.config == record.config
    assert "rate–distortion of 6 images" in capsys.readouterr().out
    # figures written elsewhere leave the record alone
    assert not add_to_record(out, tmp_path, {"other": 1})
    assert RunRecord.load(out).results.figures == summary


def test_the_command_names_its_flags_in_errors(trained, capsys):
    out, _ = trained
    with pytest.raises(SystemExit) as exit_status:
        main(["figures", "--model", str(out), "--split", "validation"])
    assert exit_status.value.code == 2
    assert "hf-ddpm figures: error: --split must be 'train' or 'test' for the digits" in capsys.readouterr().err


def test_python_dash_m_has_the_command():
    done = subprocess.run([sys.executable, "-m", "hf_ddpm", "figures", "--help"], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr
    assert "--num-images" in done.stdout and "steps_tradeoff" in done.stdout
