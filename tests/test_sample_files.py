"""`hf-ddpm sample --out-dir`: every image as a file, image i from a generator seeded by (seed, i), split over
processes, resumable (hf_ddpm.sample_files)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import CLASS_NAMES, tiny_conditional_pipeline, tiny_unet
from training_support import REPO, accelerate_launch

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler
from hf_ddpm.cli import main
from hf_ddpm.image_seeds import image_generators
from hf_ddpm.sample_files import open_samples

STEPS = 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-pipeline")
    DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=12)).save_pretrained(folder)
    return str(folder)


def _expected(pipe, seed: int, count: int, steps: int = STEPS, **kwargs):
    """The pipeline's own images with one generator per image, seeded by (seed, i), all in one batch."""
    output = pipe(batch_size=count, generator=image_generators(seed, range(count)), num_inference_steps=steps,
                  output_type="np", **kwargs)
    return np.rint(output.images * 255).astype(np.uint8), output.class_labels


def _sample(model_dir, out, *extra, steps: int = STEPS):
    main(["sample", "--model", model_dir, "--steps", str(steps), "--out-dir", str(out), *extra])
    return open_samples(str(out))


def test_two_processes_write_the_images_of_one_process_whatever_the_batches(model_dir, tmp_path):
    result = accelerate_launch(["-m", "hf_ddpm", "sample", "--model", model_dir, "--num-images", "10", "--steps",
                                str(STEPS), "--seed", "7", "--batch-size", "2", "--shard-size", "3", "--out-dir",
                                str(tmp_path / "two")], {"ACCELERATE_USE_CPU": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    two = open_samples(str(tmp_path / "two"))
    one = _sample(model_dir, tmp_path / "one", "--num-images", "10", "--seed", "7", "--batch-size", "4",
                  "--shard-size", "5")
    expected, _ = _expected(DDPMDocPipeline.from_pretrained(model_dir), 7, 10)
    np.testing.assert_array_equal(two.read(0, 10), expected)
    np.testing.assert_array_equal(one.read(0, 10), expected)
    records = sorted(os.listdir(tmp_path / "two" / "shards"))
    assert records == [f"shard_{k:06d}.json" for k in range(4)]  # ⌈10 / 3⌉ shards, split over the two processes


def test_npz_holds_the_same_images_and_the_labels_of_image_i_depend_on_seed_and_i(tmp_path):
    pipe = tiny_conditional_pipeline()
    pipe.save_pretrained(tmp_path / "model")
    model = str(tmp_path / "model")
    drawn = _sample(model, tmp_path / "drawn", "--num-images", "7", "--seed", "2", "--format", "npz",
                    "--batch-size", "3", "--shard-size", "4", "--guidance-scale", "2")
    files = os.listdir(tmp_path / "drawn")
    assert "samples_7x8x8x1.npz" in files and not os.listdir(tmp_path / "drawn" / "shards")
    images, labels = _expected(pipe, 2, 7, guidance_scale=2.0)
    np.testing.assert_array_equal(drawn.read(0, 7), images)
    np.testing.assert_array_equal(drawn.labels, labels.numpy())  # drawn after x_T from each image's generator
    with np.load(tmp_path / "drawn" / "samples_7x8x8x1.npz") as data:  # openai's layout: arr_0 NHWC, arr_1 labels
        assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (7, 8, 8, 1)

    given = _sample(model, tmp_path / "given", "--num-images", "5", "--class-labels", "emu,cat", "--seed", "2",
                    "--batch-size", "2")
    ids = pipe.get_label_ids(["emu", "cat", "emu", "cat", "emu"])
    images, _ = _expected(pipe, 2, 5, class_labels=ids)
    np.testing.assert_array_equal(given.read(0, 5), images)
    assert given.labels.tolist() == ids and len(CLASS_NAMES) == 3


def test_a_killed_run_resumes_at_the_missing_shards_losing_and_redrawing_nothing(model_dir, tmp_path):
    out, count = tmp_path / "killed", 30
    command = [sys.executable, "-m", "hf_ddpm", "sample", "--model", model_dir, "--num-images", str(count), "--steps",
               "12", "--seed", "1", "--batch-size", "1", "--shard-size", "1", "--out-dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = out / "shards"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and \
            not (shards.is_dir() and len(os.listdir(shards)) >= 2):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = sorted(os.listdir(shards))
    assert 2 <= len(done) < count, "the run was not stopped in the middle"
    kept = {name: (os.stat(out / name).st_ino, os.stat(out / name).st_mtime_ns)
            for name in os.listdir(out) if name.endswith(".png")}

    resumed = _sample(model_dir, out, "--num-images", str(count), "--seed", "1", "--batch-size", "1",
                      "--shard-size", "1", steps=12)
    for name, identity in kept.items():  # PNGs of finished shards are not written again
        if f"shard_{int(name[:-4]):06d}.json" in done:
            assert (os.stat(out / name).st_ino, os.stat(out / name).st_mtime_ns) == identity
    pngs = sorted(name for name in os.listdir(out) if name.endswith(".png"))
    assert pngs == [f"{i:06d}.png" for i in range(count)] and not [n for n in os.listdir(out) if n.endswith(".tmp")]
    expected, _ = _expected(DDPMDocPipeline.from_pretrained(model_dir), 1, count, steps=12)
    np.testing.assert_array_equal(resumed.read(0, count), expected)


def test_a_folder_of_other_settings_and_bad_flags_get_one_line(model_dir, tmp_path, capsys):
    _sample(model_dir, tmp_path / "a", "--num-images", "2", "--seed", "0")
    cases = [
        (["--out-dir", str(tmp_path / "a"), "--num-images", "2", "--seed", "1"],
         "holds samples of other settings (seed"),
        (["--out-dir", str(tmp_path / "b")], "--num-images is needed with --out-dir"),
        (["--out-dir", str(tmp_path / "c"), "--num-images", "2", "--guidance-scale", "2"],
         "--guidance-scale is for class-conditional models"),
    ]
    for flags, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["sample", "--model", model_dir, "--steps", str(STEPS), *flags])
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert exit_info.value.code == 2 and len(errors) == 1 and message in errors[0], errors
    assert json.loads((tmp_path / "a" / "samples.json").read_text())["seed"] == 0
    assert not (tmp_path / "c").exists()
