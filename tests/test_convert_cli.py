"""``hf-ddpm convert``: an openai checkpoint file (a ``torch.save``-d random-weight guided-diffusion model) in, a
``DDPMDocPipeline`` folder out that computes what the checkpoint's model computes; each kind of bad input is one
error line naming the flag or the file."""

import pytest
import torch
from convert_support import TINY, openai_model_and_diffusion, relative_error

from hf_ddpm import DDPMDocPipeline
from hf_ddpm.cli import main
from hf_ddpm.errors import ParameterError

FLAGS = dict(TINY, num_head_channels=16, class_cond=True, learn_sigma=True, resblock_updown=True,
             use_new_attention_order=True, noise_schedule="cosine", diffusion_steps=4000, rescale_timesteps=True)


def _argv(flags: dict) -> list[str]:
    """openai's command-line spelling: --name value, booleans True/False."""
    return [token for name, value in flags.items() for token in (f"--{name}", str(value))]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model, _ = openai_model_and_diffusion(**FLAGS)
    path = tmp_path_factory.mktemp("openai") / "model.pt"
    torch.save(model.state_dict(), path)
    return model, path


def test_converted_folder_is_the_checkpoints_model_and_diffusion(checkpoint, tmp_path, capsys):
    model, path = checkpoint
    main(["convert", "guided-diffusion", str(path), "--out", str(tmp_path), "--", *_argv(FLAGS)])
    assert f"wrote {tmp_path}" in capsys.readouterr().out
    pipe = DDPMDocPipeline.from_pretrained(tmp_path)
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([0.25 * 17, 999.75]), torch.tensor([3, 999])
    with torch.no_grad():
        assert relative_error(pipe.unet(x, t, class_labels=y).sample, model(x, t, y=y)) <= 1e-5
    config = pipe.scheduler.config
    assert (config.num_train_timesteps, config.beta_schedule, config.variance_type, config.prediction_type,
            config.clip_sample) == (4000, "squaredcos_cap_v2", "learned_range", "epsilon", True)
    assert pipe.config.rescale_timesteps and pipe.num_classes == 1000 and pipe.config.null_class_label is None


def test_imported_class_conditional_model_refuses_guidance(checkpoint, tmp_path):
    """ADM trains no null label: its labels are taken, guidance_scale ≠ 1 is refused (sampling and the bound)."""
    from hf_ddpm.convert import from_guided_diffusion

    pipe = from_guided_diffusion(checkpoint[0].state_dict(), **FLAGS)
    images = pipe(class_labels=[7], num_inference_steps=2, output_type="pt").images
    with pytest.raises(ParameterError) as error:
        pipe(class_labels=[7], num_inference_steps=2, guidance_scale=2.0)
    assert error.value.parameter == "guidance_scale"
    with pytest.raises(ParameterError) as error:
        pipe.log_likelihood(images, class_labels=[7], guidance_scale=0.0, num_inference_steps=2)
    assert error.value.parameter == "guidance_scale"


def _bad_files(folder):
    text, empty, truncated, listed = (folder / name for name in ("text.pt", "empty.pt", "truncated.pt", "list.pt"))
    text.write_text("MODEL_FLAGS=--image_size 64\n")
    empty.write_bytes(b"")
    torch.save({"a": torch.zeros(2)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    torch.save([torch.zeros(2)], listed)
    return {"text": text, "empty": empty, "truncated": truncated, "list": listed, "missing": folder / "none.pt"}


@pytest.mark.parametrize("file, flags, message", [
    ("model", dict(FLAGS, class_cond=False), "--class_cond is most likely wrong"),
    ("model", dict(FLAGS, num_channels=64), "--num_channels is most likely wrong"),
    ("model", dict(FLAGS, use_ddim=True), "--use_ddim is not a model or diffusion flag of guided-diffusion"),
    ("model", dict(FLAGS, learn_sigma="maybe"), "--learn_sigma must be a boolean"),
    ("model", dict(FLAGS, timestep_respacing="ddim50"), "--timestep_respacing chooses a sampling chain"),
    ("model", dict(FLAGS, image_size=512, channel_mult=""), "--channel_mult starts with 0.5"),
    ("text", FLAGS, "could not be read as a PyTorch checkpoint"),
    ("empty", FLAGS, "could not be read as a PyTorch checkpoint"),
    ("truncated", FLAGS, "could not be read as a PyTorch checkpoint"),
    ("list", FLAGS, "checkpoint is not a model state dict"),
    ("missing", FLAGS, "is not a file"),
])
def test_bad_input_is_one_error_line(checkpoint, tmp_path, file, flags, message, capsys):
    path = checkpoint[1] if file == "model" else _bad_files(tmp_path)[file]
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "guided-diffusion", str(path), "--out", str(tmp_path / "out"), "--", *_argv(flags)])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("hf-ddpm convert: error: ") and message in errors[0]
    assert not (tmp_path / "out").exists()
