"""Checkpoint mechanics of hf_ddpm.checkpointing on a real Accelerator: atomic writes, `latest`, pruning, resume
checks, the stop request; and the data order of hf_ddpm.training under Accelerate's skip_first_batches."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from accelerate import Accelerator

from hf_ddpm.training.checkpointing import (
    StopRequest,
    check_resumable,
    complete_checkpoints,
    latest_checkpoint,
    prune_checkpoints,
    resolve_resume,
    save_checkpoint,
)
from hf_ddpm.training import EpochShuffleSampler, TrainingHistory

SETTINGS = {"beta_schedule": "linear", "loss_type": "hybrid"}


class FailingState:
    """A checkpointed object whose state cannot be written once ``fail`` is set: a crash in the middle of
    ``save_state`` (after the model and optimizer files are on disk)."""

    def __init__(self):
        self.fail = False

    def state_dict(self):
        if self.fail:
            raise OSError("disk full")
        return {"ok": True}

    def load_state_dict(self, state):
        pass


@pytest.fixture()
def accelerator_with_state():
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    failing = FailingState()
    accelerator.register_for_checkpointing(failing)
    return accelerator, model, failing


def test_a_write_interrupted_midway_is_never_latest_and_is_cleaned_up(tmp_path, accelerator_with_state):
    accelerator, model, failing = accelerator_with_state
    save_checkpoint(accelerator, str(tmp_path), 1, SETTINGS)
    failing.fail = True
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(accelerator, str(tmp_path), 2, SETTINGS)
    partial = tmp_path / "checkpoint-2.incomplete"
    assert (partial / "model.safetensors").exists()  # the crash happened after real files were written
    os.makedirs(tmp_path / "checkpoint-7")  # a folder without a marker (another tool, or a manual copy)
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-1")
    assert resolve_resume("latest", str(tmp_path)) == str(tmp_path / "checkpoint-1")
    with pytest.raises(ValueError, match="resume_from_checkpoint .*not a complete checkpoint"):
        resolve_resume(str(tmp_path / "checkpoint-7"), str(tmp_path))
    failing.fail = False
    save_checkpoint(accelerator, str(tmp_path), 3, SETTINGS, total_limit=5)
    assert not partial.exists()  # an older incomplete write is removed once a newer checkpoint is complete
    assert [step for step, _ in complete_checkpoints(str(tmp_path))] == [1, 3]


def test_resumed_state_equals_saved_state(tmp_path, accelerator_with_state):
    accelerator, model, _ = accelerator_with_state
    path = save_checkpoint(accelerator, str(tmp_path), 4, SETTINGS)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    assert check_resumable(path, SETTINGS) == 4
    accelerator.load_state(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key])


def test_pruning_keeps_the_newest_good_checkpoints(tmp_path, accelerator_with_state):
    accelerator, _, failing = accelerator_with_state
    for step in (1, 2, 3):
        save_checkpoint(accelerator, str(tmp_path), step, SETTINGS, total_limit=2)
    assert [step for step, _ in complete_checkpoints(str(tmp_path))] == [2, 3]
    failing.fail = True
    with pytest.raises(OSError):
        save_checkpoint(accelerator, str(tmp_path), 4, SETTINGS, total_limit=1)
    deleted = prune_checkpoints(str(tmp_path), 1)
    # the failed write at step 4 is newer than every complete one: the newest good checkpoint (3) survives
    assert deleted == [str(tmp_path / "checkpoint-2")]
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-3")
    with pytest.raises(ValueError, match="checkpoints_total_limit must be ≥ 1"):
        prune_checkpoints(str(tmp_path), 0)


def test_resume_check_names_every_differing_setting(tmp_path, accelerator_with_state):
    accelerator, _, _ = accelerator_with_state
    path = save_checkpoint(accelerator, str(tmp_path), 5, SETTINGS)
    marker = json.loads(open(os.path.join(path, "checkpoint.json")).read())
    assert marker == {"step": 5, "settings": SETTINGS}
    with pytest.raises(ValueError) as error:
        check_resumable(path, {"beta_schedule": "squaredcos_cap_v2", "loss_type": "vlb"})
    assert "beta_schedule was 'linear' there, 'squaredcos_cap_v2' now" in str(error.value)
    assert "loss_type was 'hybrid' there, 'vlb' now" in str(error.value)
    assert error.value.parameter == "resume_from_checkpoint"
    assert resolve_resume("latest", str(tmp_path / "empty")) is None
    assert resolve_resume(None, str(tmp_path)) is None


def test_stop_request_on_sigint(accelerator_with_state):
    accelerator, _, _ = accelerator_with_state
    previous = signal.getsignal(signal.SIGINT)
    with StopRequest() as stop:
        assert not stop.agreed(accelerator)
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.agreed(accelerator)
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C does not wait for the step boundary
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous


def test_skipping_batches_of_a_shuffled_epoch_continues_the_same_order():
    accelerator = Accelerator(cpu=True)
    data = torch.arange(50)
    loader = torch.utils.data.DataLoader(data, batch_size=4, sampler=EpochShuffleSampler(50, seed=7), drop_last=True)
    loader = accelerator.prepare(loader)
    epochs = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        epochs.append([batch.tolist() for batch in loader])
    assert epochs[0] != epochs[1]
    assert sorted(sum(epochs[1], [])) == sorted(set(sum(epochs[1], [])))  # a permutation: no repeats
    loader.set_epoch(1)
    tail = [batch.tolist() for batch in accelerator.skip_first_batches(loader, 5)]
    assert tail == epochs[1][5:]


def test_loss_history_round_trip():
    history = TrainingHistory()
    for step, loss in enumerate([3.0, 2.0, 1.0], start=1):
        history.append(step, loss)
    copy = TrainingHistory()
    copy.load_state_dict(history.state_dict())
    assert copy.steps == [1, 2, 3] and copy.losses == [3.0, 2.0, 1.0]
    assert copy.recent_mean(2) == 1.5
