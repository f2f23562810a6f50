"""The model card: rendered offline from the saved pipeline and the run, with metadata the Hub understands."""

from __future__ import annotations

import json

import huggingface_hub
import pytest
import yaml
from huggingface_hub import ModelCard

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler, hub
from hub_support import tiny_pipeline

RUN = dict(dataset_name=None, resolution=8, train_batch_size=16, gradient_accumulation_steps=2, learning_rate=3e-4,
           lr_scheduler="cosine", lr_warmup_steps=50, use_ema=True, ema_max_decay=0.999, mixed_precision="bf16",
           loss_type="simple", timestep_sampler="uniform", seed=7, hub_model_id="alice/ddpm-digits",
           output_dir="not shown", logging_dir="not shown")
DIGITS_QUALITY = {"fd": 1.75, "fd_name": "FD (digits classifier)", "inception_score": 8.9,
                  "score_name": "classifier score (digits classifier)", "precision": 0.8, "recall": 0.7,
                  "num_samples": 400, "num_reference": 359, "feature_model": "digits classifier",
                  "classifier": "digits classifier"}


@pytest.fixture
def offline(monkeypatch):
    """Any HTTP request of huggingface_hub raises OfflineModeIsEnabled: rendering must not need one."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def saved(tmp_path, **scheduler_config) -> tuple[DDPMDocPipeline, object]:
    pipe = tiny_pipeline()
    pipe = DDPMDocPipeline(unet=pipe.unet, scheduler=DDPMDocScheduler(**scheduler_config))
    pipe.save_pretrained(tmp_path / "out")
    return pipe, tmp_path / "out"


def metadata(card_path) -> dict:
    return yaml.safe_load(card_path.read_text(encoding="utf-8").split("---\n")[1])


def test_card_is_rendered_from_the_saved_pipeline_and_the_run(tmp_path, offline):
    pipe, out = saved(tmp_path, num_train_timesteps=400, beta_schedule="squaredcos_cap_v2", variance_type="fixed_large")
    metrics = {"test_bits_per_dim": 1.23456, "test_bits_per_dim_stderr": 0.0123, "num_test_images": 359,
               "sample_quality": DIGITS_QUALITY}  # as training/train.py writes it
    (out / "grid.png").write_bytes(b"png")
    path = hub.write_model_card(out, args=RUN, metrics=metrics, global_step=2500, wall_time_s=3725.0,
                                num_processes=2, sample_grid="grid.png", hardware="2 × test GPU")
    text = path.read_text(encoding="utf-8")
    card = ModelCard.load(path)
    hub.check_card_metadata(card)

    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "unconditional-image-generation"
    assert card.data.license == "apache-2.0"
    assert set(card.data.tags) >= {"pytorch", "diffusers", "unconditional-image-generation", "ddpm", "hf-ddpm"}
    assert card.data.datasets is None  # the digits ship with scikit-learn, not the Hub
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["bits_per_dim"].metric_value == pytest.approx(1.23456, abs=1e-4)
    assert results["fd_digits_classifier"].metric_value == 1.75
    assert results["fd_digits_classifier"].metric_name == "FD (digits classifier)"
    assert "fid" not in results and "FID" not in yaml.safe_dump(metadata(path))
    assert "No FID is reported" in text

    # settings come from the saved configs, not from defaults
    n_params = sum(p.numel() for p in pipe.unet.parameters())
    assert f"{n_params / 1e3:.0f}k parameters" in text
    assert "| diffusion steps T | 400 |" in text and "`squaredcos_cap_v2`" in text
    assert "`fixed_large`: σ_t² = β_t" in text and "attention at 4×4" in text
    # and from the run
    assert "64 per step (16 per process × 2 accumulation × 2 processes)" in text
    assert "| optimizer steps | 2,500 |" in text and "| training wall time | 1 h 02 min |" in text
    assert "bfloat16 mixed" in text and "| hardware | 2 × test GPU |" in text
    assert "![Samples from the final EMA model](grid.png)" in text
    assert 'DDPMDocPipeline.from_pretrained("alice/ddpm-digits")' in text
    assert "num_inference_steps=400," in text and "num_inference_steps=40," in text
    assert "L_simple = E_{t, x_0, ε} ‖ ε − ε_θ(" in text
    # the inputs are kept so the card can be rendered again for another repo
    run = json.loads((out / "training_run.json").read_text())
    assert run["metrics"]["sample_quality"]["fd"] == 1.75 and "output_dir" not in run["settings"]
    again = hub.render_model_card(out, run, repo_id="bob/other")
    assert 'from_pretrained("bob/other")' in str(again) and again.data.model_name == "bob/other"


def test_hub_dataset_is_listed_and_objective_follows_the_loss(tmp_path, offline):
    _, out = saved(tmp_path, variance_type="learned")
    run = {**RUN, "dataset_name": "someone/faces", "dataset_config_name": "small", "loss_type": "hybrid"}
    path = hub.write_model_card(out, args=run, metrics={"test_bits_per_dim": 3.5})
    card = ModelCard.load(path)
    assert card.data.datasets == ["someone/faces"]
    assert card.data.eval_results[0].dataset_type == "someone/faces"
    assert card.data.eval_results[0].dataset_config == "small"
    assert "L_simple + λ · L_vlb with λ = 0.001" in card.text
    # diffusers' DDPMScheduler reads hf-ddpm's `learned` (a log-variance) as a variance: no diffusers-only recipe then
    assert "DDPMPipeline(unet=" not in card.text
    assert "`DDPMPipeline` is no substitute here: this model's variance type `learned`" in card.text
    assert 'get_class_from_dynamic_module(folder, "hf_ddpm_remote.py"' in card.text  # the bundled code still works


def test_a_fourier_unet_is_named_and_diffusers_alone_is_not_offered(tmp_path, offline):
    pipe = tiny_pipeline(fourier_periods=(1.0, 4.0, 16.0))
    pipe.save_pretrained(tmp_path / "fourier")
    text = hub.write_model_card(tmp_path / "fourier", args=RUN).read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| model |"))
    n_params = sum(p.numel() for p in pipe.unet.parameters())
    assert row.startswith("| model | hf-ddpm's `FourierUNet2DModel` (a diffusers `UNet2DModel` whose first convolution")
    assert "8-bit units, periods P = 1, 4, 16)" in row and f", {n_params / 1e3:.0f}k parameters; channels 8, 16;" in row
    # the diffusers-only recipe takes the network's class from the bundled code; no DDPMPipeline recipe, and why
    assert 'class_name="FourierUNet2DModel", trust_remote_code=True)' in text
    assert "DDPMDocPipeline(unet=FourierUNet2DModel.from_pretrained(folder" in text
    assert " UNet2DModel.from_pretrained(" not in text and "DDPMPipeline(unet=" not in text
    reason = text.split("`DDPMPipeline` is no substitute here: ")[1].split("\n\n")[0]
    assert reason.startswith("the network is hf-ddpm's `FourierUNet2DModel`") and "reads 7 channels" in reason
    assert "variance" not in reason
    # with a learned variance both reasons are given
    learned = DDPMDocPipeline(unet=pipe.unet, scheduler=DDPMDocScheduler(variance_type="learned"))
    learned.save_pretrained(tmp_path / "learned")
    text = hub.write_model_card(tmp_path / "learned", args=RUN).read_text(encoding="utf-8")
    reason = text.split("`DDPMPipeline` is no substitute here: ")[1].split("\n\n")[0]
    assert "`FourierUNet2DModel`" in reason and "variance type `learned`" in reason
    # diffusers' own UNet, for contrast: named as such, loaded by diffusers, and DDPMPipeline offered
    _, out = saved(tmp_path)
    plain = hub.write_model_card(out, args=RUN).read_text(encoding="utf-8")
    assert "| model | diffusers `UNet2DModel`, " in plain and "FourierUNet2DModel" not in plain
    assert "DDPMDocPipeline(unet=UNet2DModel.from_pretrained(folder" in plain and "DDPMPipeline(unet=" in plain


def test_inception_features_are_called_fid(tmp_path, offline):
    _, out = saved(tmp_path)
    quality = {"fd": 12.0, "fd_name": "FID", "num_samples": 50000, "num_reference": 10000,
               "feature_model": "inception-v3"}
    card = ModelCard.load(hub.write_model_card(out, args=RUN, metrics=quality))
    assert [(r.metric_type, r.metric_name) for r in card.data.eval_results] == [("fid", "FID")]
    assert "No FID is reported" not in card.text


def test_a_metric_claiming_fid_for_other_features_is_refused(tmp_path, offline):
    _, out = saved(tmp_path)
    with pytest.raises(ValueError, match="not Inception-v3"):
        hub.write_model_card(out, args=RUN, metrics={**DIGITS_QUALITY, "fd_name": "FID (digits)"})


def test_bad_inputs_are_named(tmp_path, offline):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="does not hold a saved pipeline"):
        hub.write_model_card(tmp_path / "empty", args=RUN)
    _, out = saved(tmp_path)
    with pytest.raises(ValueError, match="sample_grid='missing.png'"):
        hub.write_model_card(out, args=RUN, sample_grid="missing.png")
    assert not (out / "README.md").exists()
    config = json.loads((out / "unet" / "config.json").read_text())
    (out / "unet" / "config.json").write_text(json.dumps({**config, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ValueError, match="'UNet2DConditionModel'; the model card describes only UNet2DModel or Four"):
        hub.write_model_card(out, args=RUN)
    assert not (out / "README.md").exists()


@pytest.mark.parametrize(
    "edit, problem",
    [(lambda m: m.update(library_name="transformers"), "library_name"),
     (lambda m: m.update(tags=["ddpm"]), "tags lack"),
     (lambda m: m.update(pipeline_tag="text-to-image"), "pipeline_tag"),
     (lambda m: m["model-index"][0]["results"][0]["metrics"][0].update(value=float("nan")), "non-finite"),
     (lambda m: m["model-index"][0]["results"][0].pop("task"), "task")],
)
def test_metadata_check_catches_what_the_hub_would_reject(tmp_path, offline, edit, problem):
    _, out = saved(tmp_path)
    path = hub.write_model_card(out, args=RUN, metrics={"test_bits_per_dim": 2.0})
    card = ModelCard.load(path)
    meta = metadata(path)
    edit(meta)
    broken = f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n{card.text}"
    with pytest.raises(ValueError, match=problem):
        hub.check_card_metadata(broken)


@pytest.mark.parametrize(
    "variance_type, offered",
    [("fixed_small_log", True), ("learned_range", True), ("learned", False), ("fixed_large_log", False)],
)
def test_diffusers_ddpm_pipeline_is_offered_exactly_for_the_chains_it_reproduces(tmp_path, offline, variance_type, offered):
    # tests/test_scheduler.py shows DDPMScheduler reproducing fixed_small_log and learned_range chains; it reads
    # `learned` as a variance (ours is a log-variance) and samples NaN with fixed_large_log
    _, out = saved(tmp_path, variance_type=variance_type)
    text = hub.write_model_card(out, args=RUN).read_text(encoding="utf-8")
    assert ("DDPMPipeline(unet=" in text) is offered
    assert ("`DDPMPipeline` is no substitute here" in text) is not offered
