"""Pushing to the Hub through huggingface_hub's real client, down to HTTP, against a Hub stand-in on 127.0.0.1.

The stand-in implements the endpoints ``HfApi.create_repo`` and ``HfApi.upload_folder`` call (repo creation,
README metadata validation, preupload — answered "regular" so contents travel inline in the commit — and the
NDJSON commit), records every upload, and can be told to fail. Nothing of hf_ddpm is mocked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

from hf_ddpm import DDPMDocPipeline, hub
from hf_ddpm.errors import ParameterError
from hf_ddpm.training.config import HubConfig, ObjectiveConfig, OutputConfig, ProcessConfig, RunConfig
from hf_ddpm.training.record import RunRecord
from hub_support import TOKEN, USER, FakeHub, run_results, tiny_pipeline


@pytest.fixture
def fake_hub(monkeypatch):
    """The stand-in Hub, with huggingface_hub in this process pointed at it (HF_ENDPOINT is read at import)."""
    with FakeHub() as server:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        yield server


RECORD = RunRecord(
    RunConfig(process=ProcessConfig(num_train_timesteps=50, variance_type="fixed_small"),
              objective=ObjectiveConfig(loss_type="simple", timestep_sampler="uniform"),
              output=OutputConfig(num_inference_steps=50, eval_inference_steps=50),
              hub=HubConfig(hub_model_id="alice/ddpm-digits")),
    run_results(test_bits_per_dim=2.5),
    images={"samples": "samples.png", "loss": "loss.png"},
)


@pytest.fixture
def output_dir(tmp_path) -> Path:
    """A training output folder: pipeline, card, metrics, images — and what must never be pushed."""
    out = tmp_path / "ddpm-digits"
    tiny_pipeline().save_pretrained(out)
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(out / "samples.png")
    (out / "samples").mkdir()
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(out / "samples" / "step_000100.png")
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(out / "loss.png")
    (out / "figures").mkdir()  # the paper's experiments (hf-ddpm figures)
    (out / "figures" / "rate_distortion.csv").write_text("t,rate_bits_per_dim,distortion_rmse\n1,1.8,0.1\n")
    (out / "figures" / "figures.json").write_text("{}")
    RECORD.save(out)  # training_run.json and metrics.json
    hub.write_model_card(out, RECORD)
    # training state and logs: never pushed
    (out / "checkpoint-100").mkdir()
    torch.save({"exp_avg": torch.ones(3)}, out / "checkpoint-100" / "optimizer.bin")
    (out / "checkpoint-100" / "model.safetensors").write_bytes(b"weights of a checkpoint")
    (out / "checkpoint-100" / "progress.png").write_bytes(b"an image inside a checkpoint")
    (out / "logs" / "train").mkdir(parents=True)
    (out / "logs" / "train" / "events.out.tfevents.1").write_bytes(b"tensorboard")
    (out / "random_states_0.pkl").write_bytes(b"rng")
    (out / "optimizer.bin").write_bytes(b"stray optimizer state")
    (out / ".DS_Store").write_bytes(b"junk")
    return out


PUSHED = {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
          "scheduler/scheduler_config.json", "README.md", "training_run.json", "metrics.json", "samples.png",
          "samples/step_000100.png", "loss.png", "figures/rate_distortion.csv", "figures/figures.json"}


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and modification time, to show a push left the folder as it was."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_uploads_pipeline_card_and_images_in_one_commit(fake_hub, output_dir):
    before = snapshot(output_dir)
    url = hub.push_output_folder(output_dir, "bob/digits-model", token=TOKEN, private=True)

    assert fake_hub.repos["bob/digits-model"]["private"] is True
    assert len(fake_hub.commits) == 1 and url.startswith(f"{fake_hub.url}/bob/digits-model/commit/")
    files = fake_hub.commits[0]["files"]
    code = hub.remote_code_files()
    assert set(files) == PUSHED | set(code)
    for path in PUSHED - {"README.md"}:
        assert files[path] == (output_dir / path).read_bytes(), path
    for path, source in code.items():
        assert files[path] == source, path
    # the card is rendered for the repo it went to, from the run stored in training_run.json
    card = ModelCard(files["README.md"].decode())
    assert 'DDPMDocPipeline.from_pretrained("bob/digits-model")' in card.text
    assert card.data.model_name == "bob/digits-model"
    assert [r.metric_value for r in card.data.eval_results] == [2.5]
    hub.check_card_metadata(card)
    # every request carried the token; the folder is exactly as before
    push_requests = [(m, p, auth) for m, p, auth in fake_hub.requests if not p.startswith("/api/agent-harnesses")]
    assert [m for m, _, _ in push_requests] == ["POST"] * 4  # create, validate-yaml, preupload, commit
    assert {auth for _, _, auth in push_requests} == {f"Bearer {TOKEN}"}
    assert snapshot(output_dir) == before


def test_push_is_idempotent_and_resolves_a_bare_name(fake_hub, output_dir):
    first = hub.push_output_folder(output_dir, "digits-model", token=TOKEN)
    (output_dir / "metrics.json").write_text(json.dumps({"test_bits_per_dim": 2.4}))
    second = hub.push_output_folder(output_dir, "digits-model", token=TOKEN)  # repo exists: 409 is fine

    assert list(fake_hub.repos) == [f"{USER}/digits-model"]
    assert [c["repo_id"] for c in fake_hub.commits] == [f"{USER}/digits-model"] * 2 and first != second
    assert fake_hub.commits[1]["files"]["metrics.json"] == b'{"test_bits_per_dim": 2.4}'
    # the card names the full id the Hub gave the bare name, so its snippet loads the right repo
    assert f'from_pretrained("{USER}/digits-model")' in fake_hub.commits[0]["files"]["README.md"].decode()


@pytest.mark.parametrize(
    "endpoint, status, reason",
    [("create", 401, "rejected the token"), ("commit", 500, "HTTP 500"), ("commit", 409, "conflict"),
     ("commit", 403, "may not write to bob")],
)
def test_failed_push_is_a_clear_error_and_leaves_the_folder_alone(fake_hub, output_dir, endpoint, status, reason):
    fake_hub.fail[endpoint] = status
    if endpoint == "create":
        fake_hub.fail["info"] = status  # create_repo(exist_ok=True) asks for the repo after a 401
    before = snapshot(output_dir)
    with pytest.raises(hub.HubPushError) as info:
        hub.push_output_folder(output_dir, "bob/digits-model", token=TOKEN)
    message = str(info.value)
    assert reason in message and "unchanged" in message
    assert f"hf-ddpm push --folder {output_dir} --repo-id bob/digits-model" in message
    assert fake_hub.commits == []
    assert snapshot(output_dir) == before


def test_unreachable_hub_is_a_clear_error(monkeypatch, output_dir):
    with FakeHub() as server:  # take a free port, then close it: nothing listens there
        url = server.url
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    before = snapshot(output_dir)
    with pytest.raises(hub.HubPushError, match=f"cannot reach the Hub at {re.escape(url)}"):
        hub.push_output_folder(output_dir, "bob/digits-model", token=TOKEN)
    assert snapshot(output_dir) == before


def test_a_pipeline_saved_by_hand_gets_a_card_rendered_from_its_configs(fake_hub, tmp_path):
    tiny_pipeline(num_train_timesteps=30).save_pretrained(tmp_path / "by-hand")
    hub.push_output_folder(tmp_path / "by-hand", "bob/by-hand", token=TOKEN)
    files = fake_hub.commits[0]["files"]
    assert set(files) == {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                          "scheduler/scheduler_config.json", "README.md"} | set(hub.remote_code_files())
    card = ModelCard(files["README.md"].decode())
    hub.check_card_metadata(card)
    assert card.data.eval_results is None and "| metric |" not in card.text  # no evaluation table
    assert "| diffusion steps T | 30 |" in card.text and 'from_pretrained("bob/by-hand")' in card.text
    assert "| loss | not recorded |" in card.text and "L_simple =" not in card.text  # nothing is made up
    assert "digits" not in card.text and "| data | data that was not recorded |" in card.text
    assert not (tmp_path / "by-hand" / "README.md").exists()  # the folder is only read


def test_push_before_any_network_call_rejects_bad_input(fake_hub, tmp_path, output_dir):
    with pytest.raises(ValueError, match="repo_id='a/b/c'"):
        hub.push_output_folder(output_dir, "a/b/c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="does not hold a saved pipeline"):
        hub.push_output_folder(tmp_path / "empty", "bob/x")
    assert [p for _, p, _ in fake_hub.requests if p.startswith(("/api/repos", "/api/models"))] == []


def test_push_command_in_a_fresh_process_reads_HF_ENDPOINT(fake_hub, output_dir):
    env = {**os.environ, "HF_ENDPOINT": fake_hub.url, "HF_HUB_OFFLINE": "0", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "hf_ddpm", "push", "--folder", str(output_dir), "--repo-id", "carol/ddpm",
               "--token", TOKEN]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{fake_hub.url}/carol/ddpm/commit/" in done.stdout
    assert set(fake_hub.commits[0]["files"]) == PUSHED | set(hub.remote_code_files())

    fake_hub.fail["commit"] = 401
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "hf-ddpm push: error:" in done.stderr and "rejected the token" in done.stderr
    assert "Traceback" not in done.stderr


def test_checkpoint_pusher_never_blocks_and_pushes_the_weights_of_its_step(fake_hub, tmp_path):
    pipe = tiny_pipeline()
    pusher = hub.CheckpointPusher("bob/run", token=TOKEN)
    fake_hub.release_commits.clear()  # the Hub takes as long as we like to accept the commit

    future = pusher.push_pipeline(pipe, step=10)
    pipe.save_pretrained(tmp_path / "step10")  # what the push must carry
    assert fake_hub.commit_arrived.wait(timeout=60)
    assert not future.done()  # push_pipeline returned while the upload is still in flight
    with torch.no_grad():  # training goes on and changes the weights
        for p in pipe.unet.parameters():
            p.add_(1.0)
    assert pusher.push_pipeline(pipe, step=20) is None and pusher.skipped_steps == [20]

    fake_hub.release_commits.set()
    assert future.result(timeout=60) is not None
    assert pusher.close() == []
    (commit,) = fake_hub.commits
    assert commit["summary"] == "Training in progress: step 10"
    expected = hub.pipeline_files(tmp_path / "step10")
    assert sorted(commit["files"]) == sorted(expected)
    for path in expected:
        assert commit["files"][path] == (tmp_path / "step10" / path).read_bytes(), path


def test_checkpoint_pusher_failure_is_logged_not_raised(fake_hub):
    fake_hub.fail["commit"] = 500
    pusher = hub.CheckpointPusher("bob/run", token=TOKEN)
    future = pusher.push_pipeline(tiny_pipeline(), step=5)
    assert future.result(timeout=60) is None
    errors = pusher.close()
    assert len(errors) == 1 and "step 5" in errors[0] and "HTTP 500" in errors[0]
    # the next checkpoint is tried again
    fake_hub.fail.clear()
    assert pusher.push_pipeline(tiny_pipeline(), step=6).result(timeout=60) is not None
    assert [c["summary"] for c in fake_hub.commits] == ["Training in progress: step 6"]


def test_hub_settings_are_checked_by_name():
    """The trainer's Hub settings (``HubConfig``, checked with this module's ``check_repo_id``) and the pusher refuse
    contradictions and malformed repo ids before any network call, naming the parameter."""
    HubConfig(push_to_hub=True, hub_model_id="bob/run", push_every_checkpoint=True)
    for settings, named in [(dict(push_every_checkpoint=True), "push_every_checkpoint"),
                            (dict(push_to_hub=True), "hub_model_id"),
                            (dict(hub_private_repo=True), "hub_private_repo"),
                            (dict(push_to_hub=True, hub_model_id="bad name!"), "hub_model_id='bad name!'")]:
        with pytest.raises(ParameterError, match=re.escape(named)):
            HubConfig(**settings)
    with pytest.raises(ParameterError, match=re.escape("repo_id='a/b/c'")):
        hub.CheckpointPusher("a/b/c")


TRAIN = Path(__file__).resolve().parents[1] / "training" / "train.py"
TINY_RUN = ["--max_train_steps", "6", "--checkpointing_steps", "3", "--num_train_timesteps", "20",
            "--num_samples", "4", "--num_inference_steps", "5", "--final_eval_timesteps", "4",
            "--eval_steps", "1000", "--eval_inference_steps", "5", "--save_images_steps", "1000", "--no-figures"]


def train_and_push(fake_hub, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": fake_hub.url, "HF_HUB_OFFLINE": "0", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(TRAIN), "--output_dir", str(out), *TINY_RUN, "--push_to_hub",
               "--hub_model_id", "bob/tiny-run", "--hub_token", TOKEN, *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_training_pushes_its_checkpoints_and_its_final_output(fake_hub, tmp_path):
    out = tmp_path / "run"
    done = train_and_push(fake_hub, out, "--push_every_checkpoint", "--fourier_periods", "1,16")
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint, final = fake_hub.commits  # the checkpoint at step 3 in the background, then the output (step 6)
    assert checkpoint["summary"] == "Training in progress: step 3"
    assert sorted(checkpoint["files"]) == sorted(hub.pipeline_files(out))
    assert checkpoint["files"]["unet/diffusion_pytorch_model.safetensors"] != \
        (out / "unet/diffusion_pytorch_model.safetensors").read_bytes()  # the weights of step 3, not the final ones
    expected = set(hub.files_to_push(out)) | set(hub.remote_code_files())
    assert set(final["files"]) == expected
    for path in expected - {"README.md"} - set(hub.remote_code_files()):
        assert final["files"][path] == (out / path).read_bytes(), path
    assert not [p for c in fake_hub.commits for p in c["files"] if p.startswith("checkpoint-") or p.endswith(".bin")]
    # a FourierUNet2DModel: the card names it and its diffusers-only recipe loads it from the bundled code
    card = final["files"]["README.md"].decode()
    assert "| model | hf-ddpm's `FourierUNet2DModel`" in card and "periods $P$ = 1, 16)" in card
    assert "unet=FourierUNet2DModel.from_pretrained(folder" in card and "remote_code/hf_ddpm_fourier_unet.py" in final["files"]


def test_training_keeps_its_output_when_the_push_fails(fake_hub, tmp_path):
    fake_hub.fail["commit"] = 500
    out = tmp_path / "run"
    done = train_and_push(fake_hub, out)
    assert done.returncode != 0
    assert "HTTP 500" in done.stderr + done.stdout and "complete and unchanged" in done.stderr + done.stdout
    assert fake_hub.commits == []
    # the output is complete: the trained pipeline loads, with its card, metrics and images beside it
    assert DDPMDocPipeline.from_pretrained(out).unet.config.sample_size == 8
    assert {"README.md", "metrics.json", "samples.png", "loss.png"} <= set(hub.files_to_push(out))
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 6
    assert 'from_pretrained("bob/tiny-run")' in (out / "README.md").read_text()
