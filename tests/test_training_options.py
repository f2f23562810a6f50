"""training/train.py options that change how a run is executed or recorded, each checked on a tiny real run:
--gradient_checkpointing, --mixed_precision bf16, --logger tensorboard|wandb, Ctrl-C in a 2-process run, and the
data folder recorded for `hf-ddpm evaluate`."""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from PIL import Image
from safetensors.torch import load_file

from hf_ddpm import DDPMDocPipeline, bits_per_dim
from hf_ddpm.data import load_image_data
from hf_ddpm.errors import ParameterError
from hf_ddpm.training import held_out_bound
from hf_ddpm.training.checkpointing import complete_checkpoints
from hf_ddpm.training.config import RunConfig
from hf_ddpm.training.trainer import Trainer
from training_support import REPO, TRAIN_PY, as_flags, launch, tiny_settings, train_tiny

STEPS = 3


pytestmark = pytest.mark.usefixtures("hub_offline")


def instrumented_run(config, out, **extra) -> dict:
    """A tiny run whose UNet reports what happens inside it: every entry into the first ResNet block of the first
    down block (grad mode, output dtype; a forward pre-hook sees an entry even when torch's non-reentrant
    checkpoint stops the recomputation before the block returns), the same block's output dtype in the evaluation
    network (samples, the bound, the saved pipeline), and the dtype of the model output the objective receives
    (a forward hook on the network the loop calls, after Accelerate's autocast wrapper)."""
    trainer = Trainer(RunConfig.from_settings(tiny_settings(config, out, max_train_steps=STEPS,
                                                            checkpointing_steps=STEPS, **extra)))
    record = {"unet": trainer.accelerator.unwrap_model(trainer.unet),
              "initial": {k: v.clone() for k, v in trainer.unet.state_dict().items()},
              "entries_with_grad": 0, "dtypes_with_grad": set(), "dtypes_without_grad": set(),
              "loss_input_dtypes": set(), "counting": True}
    block = record["unet"].down_blocks[0].resnets[0]

    def entered(module, args):
        record["entries_with_grad"] += torch.is_grad_enabled() and record["counting"]

    timing = trainer.time_training_step

    def untimed():  # the cost estimate's forward/backward passes before the first step are not training steps
        record["counting"] = False
        try:
            return timing()
        finally:
            record["counting"] = True

    trainer.time_training_step = untimed

    def returned(module, args, output):
        record["dtypes_with_grad" if torch.is_grad_enabled() else "dtypes_without_grad"].add(output.dtype)

    def objective_input(module, args, output):
        if torch.is_grad_enabled():
            record["loss_input_dtypes"].add(output.sample.dtype)

    block.register_forward_pre_hook(entered)
    block.register_forward_hook(returned)
    trainer.evaluation.unet.down_blocks[0].resnets[0].register_forward_hook(returned)  # samples and the bound
    trainer.unet.register_forward_hook(objective_input)
    trainer.run()
    return record


@pytest.fixture()
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state whose mixed precision cannot change; a run with another precision in
    this test process needs it reset (as accelerate's own test cases do), before and after."""
    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def raw_weights(out):
    return load_file(os.path.join(out, f"checkpoint-{STEPS}", "model.safetensors"))


def test_the_run_length_is_the_steps_else_the_epochs_else_the_budgets_default(tmp_path, tiny_config):
    """--max_train_steps wins, else --num_epochs passes over the data, else the digits' default: 3500 steps, 3000
    for a class-conditional run (its final evaluation costs more in the same budget)."""
    from hf_ddpm.training.config import CONDITIONAL_TRAIN_STEPS, DEFAULT_TRAIN_STEPS

    assert RunConfig().train_steps(steps_per_epoch=22) == DEFAULT_TRAIN_STEPS == 3500
    assert RunConfig.from_settings(dict(class_conditional=True)).train_steps(22) == CONDITIONAL_TRAIN_STEPS == 3000
    assert RunConfig.from_settings(dict(num_epochs=3)).train_steps(22) == 66
    assert RunConfig.from_settings(dict(num_epochs=3, max_train_steps=5, class_conditional=True)).train_steps(22) == 5
    trainer = Trainer(RunConfig.from_settings(tiny_settings(tiny_config, tmp_path, max_train_steps=None, num_epochs=2,
                                                            train_batch_size=16)))
    assert trainer.max_train_steps == 2 * trainer.steps_per_epoch == 2 * (len(trainer.data.train) // 16)
    with pytest.raises(ParameterError, match="num_epochs"):
        RunConfig.from_settings(dict(num_epochs=0))


def test_the_final_samples_take_the_full_chain_of_any_length_unless_told():
    """--num_inference_steps defaults to num_train_timesteps, so a run with few timesteps needs no second flag."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_script", TRAIN_PY)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    parsed = vars(script.build_parser().parse_args(["--num_train_timesteps", "20"]))
    assert RunConfig.from_settings(parsed).output.num_inference_steps == 20
    assert RunConfig().output.num_inference_steps == 1000
    assert RunConfig.from_settings(dict(num_train_timesteps=20, num_inference_steps=7)).output.num_inference_steps == 7
    with pytest.raises(ParameterError, match="num_inference_steps must not exceed num_train_timesteps"):
        RunConfig.from_settings(dict(num_train_timesteps=20, num_inference_steps=21))


def test_gradient_checkpointing_recomputes_and_gives_the_same_weights(tmp_path, tiny_config):
    """With the flag, each ResNet block runs twice per training step (forward, then recomputed in backward) — the
    flag is really on — and the final raw and EMA weights are bit-identical to a run without it: recomputation runs
    the same float32 kernels on the same inputs (one thread, RNG state restored by torch's checkpoint), so the
    activations, hence the gradients, are the same bits, not merely close."""
    plain, checkpointed = tmp_path / "plain", tmp_path / "checkpointed"
    without = instrumented_run(tiny_config, plain)
    with_ = instrumented_run(tiny_config, checkpointed, gradient_checkpointing=True)
    assert not without["unet"].is_gradient_checkpointing and with_["unet"].is_gradient_checkpointing
    assert without["entries_with_grad"] == STEPS
    assert with_["entries_with_grad"] == 2 * STEPS
    a, b = raw_weights(plain), raw_weights(checkpointed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ema_a = DDPMDocPipeline.from_pretrained(plain).unet.state_dict()
    ema_b = DDPMDocPipeline.from_pretrained(checkpointed).unet.state_dict()
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def test_bf16_autocast_on_cpu_trains_and_saves_a_float32_pipeline(tmp_path, tiny_config, fresh_accelerator_state):
    """--mixed_precision bf16 on a CPU: the UNet's layers compute in bfloat16 (Accelerate's CPU autocast) while the
    objective gets float32 outputs; the run follows the float32 run to bf16 rounding (same draws, same data) without
    being it; the weights and the saved pipeline stay float32 and load. Evaluations and samples (one at step 2, the
    final ones) run in float32 like the saved pipeline, so the bound in metrics.json is the saved pipeline's, and the
    training steps after an evaluation are back in bf16."""
    full, mixed = tmp_path / "fp32", tmp_path / "bf16"
    evaluate_midway = dict(eval_steps=2, eval_timesteps=4)
    fp32 = instrumented_run(tiny_config, full, **evaluate_midway)
    AcceleratorState._reset_state(True)
    bf16 = instrumented_run(tiny_config, mixed, mixed_precision="bf16", **evaluate_midway)
    assert fp32["dtypes_with_grad"] == {torch.float32}
    assert bf16["dtypes_with_grad"] == {torch.bfloat16} and bf16["entries_with_grad"] == STEPS
    assert fp32["loss_input_dtypes"] == bf16["loss_input_dtypes"] == {torch.float32}
    assert bf16["dtypes_without_grad"] == {torch.float32}

    losses_fp32 = np.array(json.loads((full / "metrics.json").read_text())["train_loss_history"]["losses"])
    losses_bf16 = np.array(json.loads((mixed / "metrics.json").read_text())["train_loss_history"]["losses"])
    assert len(losses_bf16) == STEPS and np.isfinite(losses_bf16).all()
    assert not np.array_equal(losses_fp32, losses_bf16)
    # bfloat16 keeps 8 significant bits (relative rounding 2^-9 ≈ 0.2 % per operation), so the losses agree to a few
    # roundings: 0.03 % on an AVX-512/AMX-BF16 Xeon, 0.16 % on the same CPU limited to torch's portable kernels and
    # oneDNN's SSE4.1 (ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41), 0.05-0.08 % on an AMD EPYC
    np.testing.assert_allclose(losses_bf16, losses_fp32, rtol=5e-3)

    w32, w16 = raw_weights(full), raw_weights(mixed)
    assert {t.dtype for t in w16.values()} == {torch.float32}
    assert all(torch.isfinite(t).all() for t in w16.values())
    assert any(not torch.equal(w32[k], w16[k]) for k in w32)
    w0 = fp32["initial"]
    assert all(torch.equal(w0[k], bf16["initial"][k]) for k in w0)  # the same seeded start
    update32 = torch.cat([(w32[k] - w0[k]).flatten() for k in w32])
    update16 = torch.cat([(w16[k] - w0[k]).flatten() for k in w32])
    assert float(update32.norm()) > 0
    # Adam's first steps move each weight by ≈ lr·sign(g), so the runs part only where a bf16 gradient changes sign:
    # 0.040-0.044 under the four kernel choices above (avx512/avx2/default torch kernels, oneDNN AVX-512/AVX2/SSE4.1)
    assert float((update16 - update32).norm() / update32.norm()) < 0.15

    pipeline = DDPMDocPipeline.from_pretrained(mixed)
    assert {p.dtype for p in pipeline.unet.parameters()} == {torch.float32}
    images = pipeline(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                      output_type="pt").images
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    assert json.loads((mixed / "training_run.json").read_text())["settings"]["mixed_precision"] == "bf16"
    reported = json.loads((mixed / "metrics.json").read_text())["test_bits_per_dim"]
    held_out = load_image_data().eval.tensor()  # the digits' held-out split, as the run evaluated it
    assert reported == held_out_bound(pipeline.unet, pipeline.scheduler, held_out, num_timesteps=4, seed=3,
                                      bound_proposal=pipeline.config.bound_proposal).bits_per_dim


def test_tensorboard_logs_the_loss_of_every_step(tmp_path, tiny_config):
    """--logger tensorboard: event files under <output_dir>/<logging_dir>/hf-ddpm whose `loss` scalars, read back
    with TensorBoard's own EventAccumulator, are the per-step losses of metrics.json (float32 in the event file), and
    whose evaluation scalars (bound estimate, FD, score, class χ²) are metrics.json's evaluation log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train_tiny(tiny_config, out, max_train_steps=STEPS, checkpointing_steps=STEPS, logger="tensorboard",
               logging_dir="tb", hub_token="hf_not_a_secret", eval_steps=2, eval_timesteps=4)
    assert glob.glob(str(out / "tb" / "hf-ddpm" / "events.out.tfevents.*"))
    events = EventAccumulator(str(out / "tb" / "hf-ddpm"))
    events.Reload()
    logged = events.Scalars("loss")
    history = json.loads((out / "metrics.json").read_text())["train_loss_history"]
    assert [e.step for e in logged] == history["steps"] == list(range(1, STEPS + 1))
    np.testing.assert_allclose([e.value for e in logged], history["losses"], rtol=1e-7)
    assert [e.step for e in events.Scalars("lr")] == history["steps"]
    (evaluation,) = json.loads((out / "metrics.json").read_text())["eval_log"]  # step 2: the bound and the samples
    for name in ("eval_bits_per_dim", "eval_fd", "eval_score", "eval_class_chi2"):
        assert [(e.step, e.value) for e in events.Scalars(name)] == [(2, pytest.approx(evaluation[name], rel=1e-6))]
    hparams = (glob.glob(str(out / "tb" / "hf-ddpm" / "*" / "hparams.yml")) or [None])[0]
    assert hparams is not None and "hf_not_a_secret" not in open(hparams).read()
    assert "fourier_periods" in open(hparams).read()  # a list-valued flag, logged as text


def wandb_records(run_file: str):
    """The protobuf records of an offline wandb run file: a 7-byte header (':W&B', magic, version), then LevelDB's
    log format — 32 KiB blocks of chunks, each with a 7-byte header (checksum, length, type: 1 full, 2 first,
    3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = open(run_file, "rb").read()
    assert data[:4] == b":W&B"
    block, header = 32768, 7
    position, pending, records = 7, b"", []
    while position + header <= len(data):
        if block - position % block < header:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position:position + header])
        chunk = data[position + header:position + header + length]
        position += header + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def item_key(item) -> str:
    """The key of a wandb history/config item (written as ``key`` or as the path ``nested_key``)."""
    return item.key or "/".join(item.nested_key)


def test_wandb_offline_logs_the_loss_of_every_step(tmp_path, tiny_config, monkeypatch):
    """--logger wandb with WANDB_MODE=offline (no network): the run folder lies under --logging_dir, its history
    records hold the per-step losses of metrics.json, and its config the flags without the Hub token."""
    for name, value in {"WANDB_MODE": "offline", "WANDB_CONSOLE": "off", "WANDB_SILENT": "true",
                        "WANDB_CONFIG_DIR": tmp_path / "wandb-config", "WANDB_CACHE_DIR": tmp_path / "wandb-cache",
                        "WANDB_DATA_DIR": tmp_path / "wandb-data"}.items():
        monkeypatch.setenv(name, str(value))
    out = tmp_path / "run"
    train_tiny(tiny_config, out, max_train_steps=STEPS, checkpointing_steps=STEPS, logger="wandb",
               hub_token="hf_not_a_secret")
    (run_file,) = glob.glob(str(out / "logs" / "wandb" / "offline-run-*" / "run-*.wandb"))
    deadline = time.time() + 60  # wandb's service process may still be writing the file when finish() returns
    while "exit" not in (kinds := [r.WhichOneof("record_type") for r in wandb_records(run_file)]):
        assert time.time() < deadline, f"the wandb run file never got its exit record; records: {kinds}"
        time.sleep(0.5)
    records = wandb_records(run_file)
    logged = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {item_key(item): json.loads(item.value_json) for item in record.history.item}
            if "loss" in items:
                logged[items["_step"]] = items["loss"]
    history = json.loads((out / "metrics.json").read_text())["train_loss_history"]
    assert sorted(logged) == history["steps"] == list(range(1, STEPS + 1))
    assert [logged[step] for step in history["steps"]] == history["losses"]  # JSON doubles: exact
    config = {item_key(item): item.value_json for r in records if r.WhichOneof("record_type") == "config"
              for item in r.config.update}
    assert json.loads(config["learning_rate"]) == 1e-3 and "hub_token" not in config
    assert "hf_not_a_secret" not in open(run_file, "rb").read().decode("latin-1")


def test_ctrl_c_stops_a_two_process_run_with_one_checkpoint_that_resumes(tmp_path, tiny_config):
    """Ctrl-C in a terminal signals the launcher's process group. torch's elastic agent (under `accelerate launch`)
    starts each worker in its own session and forwards the signal to both; StopRequest makes both ranks agree on
    the step, write one checkpoint together (the main process finalises it), and stop. A second 2-process run
    resumes from it to the requested step, with the loss history continuing the interrupted one."""
    out = tmp_path / "run"
    small = dict(checkpointing_steps=0, train_batch_size=16)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", TRAIN_PY,
               *as_flags(tiny_settings(tiny_config, out, max_train_steps=100000, **small))]
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=REPO, start_new_session=True)
    try:
        seen, deadline = "", time.time() + 180
        # at least one step done: a bar on a terminal ("… | 3/100000"), a log line here ("training: 3/100000 steps")
        while not re.search(r"training:[^\r\n]*?[ |]([1-9]\d*)/100000", seen):
            character = launcher.stdout.read(1)
            assert character and time.time() < deadline, seen[-2000:]
            seen += character
        os.killpg(launcher.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        rest, _ = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.communicate()
    output = seen + rest
    stops = re.findall(r"stopped on request at step (\d+)", output)
    assert len(stops) == 1, output[-3000:]  # printed by the main process only
    step = int(stops[0])
    assert [name for name in os.listdir(out) if name.startswith("checkpoint-")] == [f"checkpoint-{step}"]
    assert complete_checkpoints(str(out)) == [(step, str(out / f"checkpoint-{step}"))]
    assert sorted(f for f in os.listdir(out / f"checkpoint-{step}") if f.startswith("random_states")) == [
        "random_states_0.pkl", "random_states_1.pkl"]  # both ranks took part in the one checkpoint
    assert not os.path.exists(out / "model_index.json")  # stopped: no final outputs

    result = launch(tiny_settings(tiny_config, out, max_train_steps=step + 2, resume_from_checkpoint="latest", **small),
                    {"ACCELERATE_USE_CPU": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from {out / f'checkpoint-{step}'} at step {step}" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == step + 2 and metrics["num_processes"] == 2
    assert metrics["images_seen"] == 2 * 16 * 2  # this session: 2 steps of 16 images on each of 2 processes
    assert metrics["train_loss_history"]["steps"] == list(range(1, step + 3))


def test_evaluate_finds_the_training_folder_from_another_directory(tmp_path, tiny_config, monkeypatch):
    """--train_data_dir given relative to where training ran is recorded absolute in training_run.json, so
    `hf-ddpm evaluate --model OUT` started elsewhere evaluates the very images training held out."""
    from hf_ddpm.cli import main as cli_main
    from hf_ddpm.image_seeds import BOUND, image_generators

    rng = np.random.default_rng(0)
    folder = tmp_path / "work" / "images" / "train"
    folder.mkdir(parents=True)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "work" / "out"
    monkeypatch.chdir(tmp_path / "work")
    train_tiny(tiny_config, out, train_data_dir="images", validation_fraction=0.25, train_batch_size=10,
               max_train_steps=2, checkpointing_steps=0)
    recorded = json.loads((out / "training_run.json").read_text())["settings"]["train_data_dir"]
    assert recorded == str(tmp_path / "work" / "images")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cli_main(["evaluate", "--model", str(out), "--json", "bound.json", "--seed", "4", "--batch-size", "512"])
    record = json.loads((elsewhere / "bound.json").read_text())
    assert record["split"] == "train[validation_fraction=0.25, seed=3]"
    held_out = load_image_data(train_data_dir=recorded, validation_fraction=0.25, seed=3).eval.tensor()
    pipeline = DDPMDocPipeline.from_pretrained(out)
    bound = bits_per_dim(pipeline.unet, pipeline.scheduler, held_out,
                         generator=image_generators(4, range(len(held_out)), BOUND))  # evaluate's per-image noise
    assert record["bound"]["num_images"] == len(held_out) == 10
    assert record["bound"]["bits_per_dim"] == pytest.approx(float(bound.total.double().mean()), rel=1e-6)


def test_other_images_are_judged_only_in_the_feature_model_named(tmp_path, tiny_config):
    """On an image folder the digits evaluator means nothing: without --feature_model neither the evaluations nor the
    final samples are judged (and a 1-image grid is fine); with one, both are judged in its features, and the final
    numbers are those of hf_ddpm.metrics on the saved pipeline's own samples. A held-out split too small to judge
    against stops the run before training."""
    from test_metrics_models import _tiny_dinov2

    from hf_ddpm.data import digits_split
    from hf_ddpm.images import sample_grid
    from hf_ddpm.metrics import sample_quality

    folder = tmp_path / "images" / "train"
    folder.mkdir(parents=True)
    for i, image in enumerate(digits_split("train")[0][:40, 0]):
        Image.fromarray(image).save(folder / f"{i}.png")
    data = dict(train_data_dir=str(tmp_path / "images"), validation_fraction=0.25, train_batch_size=10,
                max_train_steps=2, checkpointing_steps=0, eval_steps=1)
    plain = train_tiny(tiny_config, tmp_path / "plain", num_samples=1, **data)
    assert plain.results.sample_quality is None
    assert [sorted(e) for e in plain.results.eval_log] == [["eval_bits_per_dim", "eval_bits_per_dim_stderr", "loss",
                                                             "lr", "step"]]

    _tiny_dinov2(tmp_path / "features")
    out = tmp_path / "judged"
    judged = train_tiny(tiny_config, out, feature_model=str(tmp_path / "features"), **data)
    (evaluation,) = judged.results.eval_log
    assert evaluation["eval_fd_name"] == "FD_DINOv2" and evaluation["eval_fd"] > 0 and evaluation["eval_score"] is None
    pipe = DDPMDocPipeline.from_pretrained(out)
    samples, _ = sample_grid(pipe, 4, 5, 3)  # tiny_settings: num_samples 4, num_inference_steps 5, seed 3
    held_out = load_image_data(train_data_dir=str(tmp_path / "images"), validation_fraction=0.25, seed=3).eval.tensor()
    expected = sample_quality(samples, ((held_out + 1) * 127.5).round().to(torch.uint8).numpy(),
                              feature_model=str(tmp_path / "features"), progress=False)
    final = judged.results.sample_quality
    assert final["fd_name"] == "FD_DINOv2" and final["inception_score"] is None and final["num_reference"] == 10
    assert final["fd"] == pytest.approx(expected["fd"], rel=1e-6)

    with pytest.raises(ParameterError, match=r"held-out images .* are 2; judging the samples .* at least 4") as error:
        train_tiny(tiny_config, tmp_path / "small", feature_model=str(tmp_path / "features"),
                   **{**data, "validation_fraction": 0.05})
    assert error.value.parameter == "validation_fraction" and not (tmp_path / "small" / "unet").exists()


def test_the_thread_count_is_the_cores_unless_someone_chose(tmp_path):
    """`accelerate launch` exports OMP_NUM_THREADS=1 to the process it starts unless told otherwise; that default is
    replaced by this machine's usable cores, while a user's OMP_NUM_THREADS (shell or --num_cpu_threads_per_process)
    and num_threads win. Each case is a real launch of a script that prints the choice."""
    script = tmp_path / "choice.py"
    script.write_text("from hf_ddpm.training.machine import cpu_threads\nimport sys\n"
                      "print('CHOICE', *cpu_threads(int(sys.argv[1]) if len(sys.argv) > 1 else None), sep='|')\n")
    cores = len(os.sched_getaffinity(0))
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no"]
    unset = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cases = {
        "accelerate launch, nothing chosen": (launcher + [str(script)], unset, cores),
        "accelerate launch --num_cpu_threads_per_process 1": (
            launcher + ["--num_cpu_threads_per_process", "1", str(script)], unset, 1),
        "OMP_NUM_THREADS=1 accelerate launch": (launcher + [str(script)], {**unset, "OMP_NUM_THREADS": "1"}, 1),
        "python, nothing chosen": ([sys.executable, str(script)], unset, cores),
        "python, OMP_NUM_THREADS=1": ([sys.executable, str(script)], {**unset, "OMP_NUM_THREADS": "1"}, 1),
        "num_threads=3 over OMP_NUM_THREADS=1": ([sys.executable, str(script), "3"], {**unset, "OMP_NUM_THREADS": "1"}, 3),
    }
    running = {name: subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for name, (command, env, _) in cases.items()}
    for name, process in running.items():
        output, _ = process.communicate(timeout=180)
        choice = [line for line in output.splitlines() if line.startswith("CHOICE|")]
        assert len(choice) == 1, output[-2000:]
        _, threads, reason = choice[0].split("|")
        assert int(threads) == cases[name][2], (name, reason)
