"""The model card: rendered offline from the saved pipeline and its run record, with metadata the Hub understands.

The assertions read the card as data — its YAML metadata, its sections, the rows of its tables, its code blocks (run
here) — never sentences of the template's prose.
"""

from __future__ import annotations

import json
import re

import huggingface_hub
import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler, hub
from hf_ddpm.fourier_unet import input_channels
from hf_ddpm.hub.card_facts import FIGURE_CAPTIONS
from hf_ddpm.losses import HYBRID_VLB_WEIGHT, LOSS_TYPES, TIMESTEP_SAMPLERS
from hf_ddpm.options import describe_beta_schedule
from hf_ddpm.samplers import RECOMMENDED, SAMPLERS, make_scheduler
from hf_ddpm.scheduler import PREDICTION_TYPES, VARIANCE_TYPES
from hf_ddpm.training.config import (MIXED_PRECISIONS, ComputeConfig, DataConfig, HubConfig, ObjectiveConfig,
                                     OptimConfig, OutputConfig, ProcessConfig, RunConfig)
from hf_ddpm.training.record import RunRecord
from helpers import tiny_unet
from hub_support import run_results, tiny_pipeline

DIGITS_QUALITY = {"fd": 1.75, "fd_name": "FD (digits classifier)", "inception_score": 8.9,
                  "score_name": "classifier score (digits classifier)", "precision": 0.8, "recall": 0.7,
                  "num_samples": 400, "num_reference": 359, "feature_model": "digits classifier",
                  "classifier": "digits classifier"}
SECTIONS = ["Use it", "Without hf-ddpm (diffusers only)", "Training", "Objective", "Evaluation", "Limitations"]


@pytest.fixture
def offline(monkeypatch):
    """Any HTTP request of huggingface_hub raises OfflineModeIsEnabled: rendering must not need one."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def saved(tmp_path, name="out", unet=None, **scheduler_config):
    """The tiny pipeline with the given scheduler settings, saved in ``tmp_path / name``."""
    pipe = DDPMDocPipeline(unet=unet or tiny_pipeline().unet, scheduler=DDPMDocScheduler(**scheduler_config))
    pipe.save_pretrained(tmp_path / name)
    return pipe, tmp_path / name


def record(T: int, results=None, images=None, **sections) -> RunRecord:
    """A run record of a T-step process (its other sections' defaults where not given)."""
    sections.setdefault("process", ProcessConfig(num_train_timesteps=T, variance_type="fixed_small"))
    sections.setdefault("objective", ObjectiveConfig(loss_type="simple", timestep_sampler="uniform"))
    sections.setdefault("output", OutputConfig(num_inference_steps=T, eval_inference_steps=T))
    return RunRecord(RunConfig(**sections), results, images or {})


def sections(text: str) -> dict[str, str]:
    """The card's sections and subsections in order: {heading: text up to the next heading}."""
    parts = re.split(r"^#{2,3} (.+)$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def section(text: str, title: str) -> str:
    return sections(text)[title]


def table(text: str) -> list[list[str]]:
    """The rows of the first markdown table in ``text`` (header and separator left out), as lists of cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in lines[2:]]


def training_table(text: str) -> dict[str, str]:
    return dict(table(section(text, "Training")))


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_metadata_and_tables_come_from_the_saved_pipeline_and_the_record(tmp_path, offline):
    pipe, out = saved(tmp_path, num_train_timesteps=400, beta_schedule="squaredcos_cap_v2", variance_type="fixed_large")
    (out / "grid.png").write_bytes(b"png")
    results = run_results(test_bits_per_dim=1.23456, test_bits_per_dim_stderr=0.0123, global_step=2500,
                          global_batch_size=64, num_processes=2, hardware="2 × test GPU", train_seconds=3725.0,
                          num_samples=16, num_inference_steps=400, sample_quality=DIGITS_QUALITY)
    run = record(400, results, {"samples": "grid.png"}, data=DataConfig(resolution=8),
                 optim=OptimConfig(train_batch_size=16, gradient_accumulation_steps=2, learning_rate=3e-4,
                                   lr_scheduler="cosine", lr_warmup_steps=50, ema_max_decay=0.995, seed=7),
                 compute=ComputeConfig(mixed_precision="bf16"), hub=HubConfig(hub_model_id="alice/ddpm-digits"))
    path = hub.write_model_card(out, run)
    card = ModelCard.load(path)
    hub.check_card_metadata(card)

    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "unconditional-image-generation"
    assert card.data.license == "apache-2.0"
    assert set(card.data.tags) >= {"pytorch", "diffusers", "unconditional-image-generation", "ddpm", "hf-ddpm"}
    assert card.data.datasets is None  # the digits ship with scikit-learn, not the Hub
    measured = {r.metric_type: (r.metric_name, r.metric_value) for r in card.data.eval_results}
    assert measured == {"bits_per_dim": ("NLL bound (bits/dim)", 1.2346),
                        "fd_digits_classifier": ("FD (digits classifier)", 1.75),
                        "classifier_score_digits_classifier": ("classifier score (digits classifier)", 8.9),
                        "precision_digits_classifier": ("Precision (digits classifier)", 0.8),
                        "recall_digits_classifier": ("Recall (digits classifier)", 0.7)}
    assert {r.dataset_type for r in card.data.eval_results} == {"sklearn-digits"}
    assert list(sections(card.text)) == SECTIONS

    rows = training_table(card.text)
    # from the saved configs
    n_params = sum(p.numel() for p in pipe.unet.parameters())
    assert rows["diffusion steps T"] == "400" and rows["β schedule"] == describe_beta_schedule("squaredcos_cap_v2", 1e-4, 0.02)
    assert rows["variance $\\Sigma_\\theta$"].startswith("`fixed_large`:") and rows["prediction"] == "`epsilon`"
    model = re.fullmatch(r"diffusers `UNet2DModel`, (\d+)k parameters; channels 8, 16; 1 residual block per level; "
                         r"attention at 4×4", rows["model"])
    assert model and int(model.group(1)) == round(n_params / 1e3)
    # from the record
    batch = re.fullmatch(r"(\d+) per step \((\d+) per process × (\d+) accumulation × (\d+) processes\)",
                         rows["batch"])
    assert batch and [int(g) for g in batch.groups()] == [64, 16, 2, 2]
    assert rows["optimizer steps"] == "2,500" and rows["training wall time"] == "1 h 02 min"
    assert rows["learning rate (AdamW)"].startswith("0.0003, cosine schedule, 50 warm-up steps")
    assert "max_decay 0.995" in rows["EMA"] and rows["precision"] == "bfloat16 mixed"
    assert rows["hardware"] == "2 × test GPU" and rows["seed"] == "7" and rows["held-out data"] == results.test_split
    assert rows["loss"].startswith("L_simple") and rows["timestep sampling"] == "uniform"
    evaluation = table(section(card.text, "Evaluation"))
    assert evaluation[0][1:] == ["1.2346 ± 0.0123", results.test_split]
    assert [row[:2] for row in evaluation[1:]] == [["FD (digits classifier)", "1.75"],
                                                   ["classifier score (digits classifier)", "8.9"],
                                                   ["Precision (digits classifier)", "0.8"],
                                                   ["Recall (digits classifier)", "0.7"]]
    assert {row[2] for row in evaluation[1:]} == {"400 samples against 359 held-out images"}
    assert re.findall(r"!\[[^\]]*\]\(([^)]+)\)", card.text) == ["grid.png"]
    snippet = python_blocks(section(card.text, "Use it"))[0]
    assert re.findall(r'from_pretrained\("([^"]+)"\)', snippet) == ["alice/ddpm-digits"]
    assert re.findall(r"num_inference_steps=(\d+)", snippet) == ["400", str(RECOMMENDED[1])]  # full chain, fast
    assert f"pipe.scheduler = {SAMPLERS[RECOMMENDED[0]].scheduler_class.__name__}.from_config(" in snippet

    # rendered again for another repo: only the repo id changes
    again = hub.render_model_card(out, run, repo_id="bob/other")
    assert again.data.model_name == "bob/other"
    assert re.findall(r'from_pretrained\("([^"]+)"\)', python_blocks(str(again))[0]) == ["bob/other"]
    assert str(again).replace("bob/other", "alice/ddpm-digits").replace("# other", "# ddpm-digits") == \
        path.read_text(encoding="utf-8")


def test_the_usage_snippet_runs_and_gives_the_pipelines_images(tmp_path, offline, monkeypatch):
    pipe, out = saved(tmp_path, num_train_timesteps=20)
    pipe.set_progress_bar_config(disable=True)
    card = hub.render_model_card(out, record(20, run_results(num_inference_steps=20)), repo_id=str(out))
    monkeypatch.chdir(tmp_path)  # the snippet saves sample.png
    scope = {}
    exec(python_blocks(section(card.text, "Use it"))[0], scope)
    expected = pipe(batch_size=16, num_inference_steps=20, generator=torch.Generator().manual_seed(0)).images
    as_array = lambda images: np.stack([np.asarray(image) for image in images])  # noqa: E731
    np.testing.assert_array_equal(as_array(scope["images"]), as_array(expected))
    bound = pipe.log_likelihood(expected[:4], generator=torch.Generator().manual_seed(0)).total
    # the fast sampler: the recommended one (hf_ddpm.samplers.RECOMMENDED) at its steps, here T − 1 = 19
    pipe.scheduler = make_scheduler(RECOMMENDED[0], pipe.scheduler.config)
    fast = pipe(batch_size=16, num_inference_steps=19, generator=torch.Generator().manual_seed(0)).images
    np.testing.assert_array_equal(as_array(scope["fast"]), as_array(fast))
    assert torch.equal(scope["bound"].total, bound)


def test_a_hub_dataset_is_listed_and_the_objective_follows_the_loss(tmp_path, offline):
    _, out = saved(tmp_path, variance_type="learned", num_train_timesteps=50)
    run = record(50, run_results(), data=DataConfig(dataset_name="someone/faces", dataset_config_name="small"),
                 process=ProcessConfig(num_train_timesteps=50, variance_type="learned"),
                 objective=ObjectiveConfig(loss_type="hybrid", timestep_sampler="importance"))
    card = ModelCard.load(hub.write_model_card(out, run))
    assert card.data.datasets == ["someone/faces"]
    assert {(r.dataset_type, r.dataset_name, r.dataset_config) for r in card.data.eval_results} == \
        {("someone/faces", "someone/faces", "small")}
    rows = training_table(card.text)
    assert rows["data"].startswith("someone/faces ([someone/faces](https://huggingface.co/datasets/someone/faces)")
    assert rows["loss"].startswith("L_hybrid") and rows["timestep sampling"].startswith("importance")
    assert f"$\\lambda = {HYBRID_VLB_WEIGHT}$" in section(card.text, "Objective")
    # diffusers' DDPMScheduler reads hf-ddpm's `learned` (a log-variance) as a variance: no diffusers-only recipe
    # then, but the bundled code still works
    recipes = python_blocks(section(card.text, "Without hf-ddpm (diffusers only)"))
    assert len(recipes) == 1 and 'get_class_from_dynamic_module(folder, "hf_ddpm_remote.py"' in recipes[0]
    assert VARIANCE_TYPES["learned"].diffusers_difference in section(card.text, "Without hf-ddpm (diffusers only)")


def test_the_bound_plus_simple_objective_and_the_sampler_mix_are_stated_with_their_values(tmp_path, offline):
    _, out = saved(tmp_path, variance_type="learned_range", num_train_timesteps=50)
    objective = ObjectiveConfig(loss_type="vlb_simple", simple_weight=12.5, timestep_sampler="importance",
                                importance_uniform_mix=0.25)
    run = record(50, process=ProcessConfig(num_train_timesteps=50, variance_type="learned_range"), objective=objective)
    text = hub.render_model_card(out, run).text
    rows = training_table(text)
    assert rows["loss"] == LOSS_TYPES["vlb_simple"].format(target="ε", simple_weight=12.5)
    assert rows["loss"].endswith("c = 12.5")
    assert rows["timestep sampling"] == TIMESTEP_SAMPLERS["importance"].format(uniform_mix=0.25)
    assert "0.25 of the uniform" in rows["timestep sampling"]
    assert "$c = 12.5$ times" in section(text, "Objective")


def test_a_fourier_unet_is_named_and_diffusers_alone_is_not_offered(tmp_path, offline):
    periods = (1.0, 4.0, 16.0)
    fourier = tiny_pipeline(fourier_periods=periods).unet
    _, out = saved(tmp_path, "fourier", unet=fourier)
    card = hub.render_model_card(out, record(1000))
    rows = training_table(card.text)
    n_params = sum(p.numel() for p in fourier.parameters())
    assert rows["model"].startswith("hf-ddpm's `FourierUNet2DModel` (")
    assert "periods $P$ = 1, 4, 16)" in rows["model"] and f", {n_params / 1e3:.0f}k parameters;" in rows["model"]
    # the diffusers-only recipe takes the network's class from the bundled code; no DDPMPipeline recipe, and why
    without = section(card.text, "Without hf-ddpm (diffusers only)")
    (recipe,) = python_blocks(without)
    assert 'class_name="FourierUNet2DModel", trust_remote_code=True)' in recipe
    assert "DDPMDocPipeline(unet=FourierUNet2DModel.from_pretrained(folder" in recipe
    assert "UNet2DModel" not in recipe.replace("FourierUNet2DModel", "")
    reasons = without.split("```")[-1]
    assert "`FourierUNet2DModel`" in reasons and f"reads {input_channels(1, periods)} channels" in reasons
    assert "variance" not in reasons
    # with a learned variance both reasons are given
    _, out = saved(tmp_path, "learned", unet=fourier, variance_type="learned")
    reasons = section(hub.render_model_card(out).text, "Without hf-ddpm (diffusers only)").split("```")[-1]
    assert "`FourierUNet2DModel`" in reasons and VARIANCE_TYPES["learned"].diffusers_difference in reasons
    # diffusers' own UNet, for contrast: named as such, loaded by diffusers, and DDPMPipeline offered
    _, out = saved(tmp_path)
    plain = hub.render_model_card(out).text
    assert training_table(plain)["model"].startswith("diffusers `UNet2DModel`, ") and "FourierUNet2DModel" not in plain
    remote, fallback = python_blocks(section(plain, "Without hf-ddpm (diffusers only)"))
    assert "DDPMDocPipeline(unet=UNet2DModel.from_pretrained(folder" in remote and "DDPMPipeline(unet=" in fallback


def test_a_pipeline_saved_by_hand_states_only_what_its_configs_say(tmp_path, offline):
    _, out = saved(tmp_path, num_train_timesteps=30)
    card = ModelCard.load(hub.write_model_card(out))
    hub.check_card_metadata(card)
    assert card.data.eval_results is None and card.data.model_name == "out"
    assert list(sections(card.text)) == SECTIONS and table(section(card.text, "Evaluation")) == []
    rows = training_table(card.text)
    assert rows["diffusion steps T"] == "30"
    assert rows["loss"] == rows["timestep sampling"] == "not recorded" and rows["data"] == "data that was not recorded"
    assert {"optimizer steps", "batch", "seed"}.isdisjoint(rows)  # nothing is made up
    assert re.findall(r"!\[", card.text) == []


def test_every_image_the_record_names_is_shown(tmp_path, offline):
    _, out = saved(tmp_path, num_train_timesteps=50)
    images = {"samples": "samples.png", "loss": "loss.png", "evaluations": "evaluations.png",
              "a_new_plot": "plots/new.png"}
    for path in images.values():
        (out / path).parent.mkdir(exist_ok=True)
        (out / path).write_bytes(b"png")
    card = hub.render_model_card(out, record(50, run_results(num_samples=16, num_inference_steps=5), images))
    shown = dict(re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", card.text))
    assert sorted(shown.values()) == sorted(images.values())
    caption = re.search(r"^\*(\d+) samples .*?(\d+) of the (\d+) steps", card.text, flags=re.MULTILINE)
    assert caption and caption.groups() == ("16", "5", "50")  # under the samples grid, from the results
    assert shown["Training loss"] == "loss.png" and shown["A new plot"] == "plots/new.png"  # a role without a caption


def test_the_paper_experiments_are_shown_with_their_numbers(tmp_path, offline):
    """A run (or `hf-ddpm figures`) that made the paper's experiments: the progressive figure with its caption, and
    the rate–distortion summary's numbers in the Evaluation section."""
    _, out = saved(tmp_path, num_train_timesteps=50)
    (out / "figures").mkdir()
    (out / "figures" / "progressive.png").write_bytes(b"png")
    summary = {"num_images": 359, "num_train_timesteps": 50, "bits_per_dim": 1.8251, "rate_bits_per_dim": 1.8223,
               "decoder_bits_per_dim": 0.0028, "prior_bits_per_dim": 2e-5, "distortion_rmse": 0.0903,
               "threshold_rmse": 1.0, "imperceptible": {"t": 8, "rate_bits_per_dim": 1.7399,
                                                        "distortion_rmse": 0.98, "share_of_codelength": 0.0467}}
    results = run_results(figures={"rate_distortion": summary})
    card = hub.render_model_card(out, record(50, results, {"progressive": "figures/progressive.png"}))
    shown = dict(re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", card.text))
    assert shown[FIGURE_CAPTIONS["progressive"]] == "figures/progressive.png"
    evaluation = " ".join(section(card.text, "Evaluation").split())
    numbers = re.search(r"on (\d+) held-out images: .* sent ([\d.]+) bits/dim .* RMSE of ([\d.]+) .* \$L_0\$ = ([\d.]+) "
                        r"bits/dim completes the bound of ([\d.]+)\. .* from \$t\$ = (\d+), after ([\d.]+) bits/dim: "
                        r"([\d.]+) %", evaluation)
    assert numbers and numbers.groups() == ("359", "1.8223", "0.090", "0.0028", "1.8251", "8", "1.7399", "4.7")


def test_inception_features_are_called_fid(tmp_path, offline):
    _, out = saved(tmp_path)
    quality = {"fd": 12.0, "fd_name": "FID", "num_samples": 50000, "num_reference": 10000,
               "feature_model": "inception-v3"}
    card = hub.render_model_card(out, record(1000, run_results(sample_quality=quality)))
    assert [(r.metric_type, r.metric_name) for r in card.data.eval_results][1:] == [("fid", "FID")]


def test_a_metric_claiming_fid_for_other_features_is_refused(tmp_path, offline):
    _, out = saved(tmp_path)
    with pytest.raises(ValueError, match="not Inception-v3"):
        misnamed = {**DIGITS_QUALITY, "fd_name": "FID (digits)"}
        hub.write_model_card(out, record(1000, run_results(sample_quality=misnamed)))


def test_bad_inputs_are_named(tmp_path, offline):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="does not hold a saved pipeline"):
        hub.write_model_card(tmp_path / "empty")
    _, out = saved(tmp_path)
    with pytest.raises(ValueError, match=re.escape("record.images['samples']='missing.png'")):
        hub.write_model_card(out, record(1000, images={"samples": "missing.png"}))
    assert not (out / "README.md").exists()
    config = json.loads((out / "unet" / "config.json").read_text())
    (out / "unet" / "config.json").write_text(json.dumps({**config, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ValueError, match="'UNet2DConditionModel'; the model card describes only UNet2DModel or Four"):
        hub.write_model_card(out)
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
    card = hub.render_model_card(out, record(1000, run_results(test_bits_per_dim=2.0)))
    meta = yaml.safe_load(str(card).split("---\n")[1])
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
    recipes = python_blocks(section(hub.render_model_card(out).text, "Without hf-ddpm (diffusers only)"))
    assert [("DDPMPipeline(unet=" in recipe) for recipe in recipes] == [False, True][:1 + offered]


@pytest.mark.parametrize("variance_type", list(VARIANCE_TYPES))
def test_the_card_describes_each_option_in_the_options_own_words(tmp_path, offline, variance_type):
    """Each option carries its description where it is defined (hf_ddpm.options, LOSS_TYPES, TIMESTEP_SAMPLERS,
    MIXED_PRECISIONS), and the card shows exactly that text: a new option cannot be described in one place and
    forgotten in another."""
    learned = VARIANCE_TYPES[variance_type].learned
    unet = tiny_pipeline().unet if not learned else tiny_unet(out_channels=2)
    prediction = list(PREDICTION_TYPES)[len(variance_type) % len(PREDICTION_TYPES)]
    loss = "hybrid" if learned else "simple"
    sampler, precision = list(TIMESTEP_SAMPLERS)[len(variance_type) % 2], list(MIXED_PRECISIONS)[len(variance_type) % 3]
    _, out = saved(tmp_path, unet=unet, num_train_timesteps=50, variance_type=variance_type, prediction_type=prediction)
    process = ProcessConfig(num_train_timesteps=50, variance_type=variance_type, prediction_type=prediction)
    objective = ObjectiveConfig(loss_type=loss, timestep_sampler=sampler)
    run = record(50, process=process, objective=objective,
                 compute=ComputeConfig(mixed_precision="bf16" if precision == "fp16" else precision))
    card = hub.render_model_card(out, run).text
    rows = training_table(card)
    assert rows["variance $\\Sigma_\\theta$"] == f"`{variance_type}`: {VARIANCE_TYPES[variance_type].variance}"
    assert rows["timestep sampling"] == TIMESTEP_SAMPLERS[sampler].format(uniform_mix=objective.importance_uniform_mix)
    assert rows["precision"] == MIXED_PRECISIONS["bf16" if precision == "fp16" else precision]
    assert LOSS_TYPES[loss].format(target=PREDICTION_TYPES[prediction].target) in rows["loss"]
    symbols = PREDICTION_TYPES[prediction]  # the objective's formula, in the LaTeX the Hub renders
    formula = (f"{symbols.target_latex} - {symbols.output_latex}" if loss == "simple" else f"${symbols.target_latex}$")
    assert formula in section(card, "Objective")


# ------------------------------------------------------------------------------------------ a class-conditional model

CLASS_BOUNDS = {"conditional": {"bits_per_dim": 2.5, "standard_error": 0.05},
                "marginal": {"bits_per_dim": 2.5123, "standard_error": 0.0456},
                "null_label": {"bits_per_dim": 2.6789, "standard_error": 0.0512},
                "classifier_accuracy": 0.8765, "classifier_timesteps": 6}
TRADEOFF = [{"guidance_scale": s, "fd": fd, "score": 1.5 + s, "precision": 0.5, "recall": 0.25, "label_accuracy": acc,
             "bits_per_dim": 2.5 + s, "standard_error": 0.01, "fd_name": "FD (digits classifier)",
             "score_name": "IS (digits classifier)", "num_samples": 40, "num_inference_steps": 20}
            for s, fd, acc in [(0.0, 9.0, 0.1), (1.0, 5.0, 0.8), (1.5, 3.0, 0.9), (2.0, 2.0, 0.95), (4.0, 4.0, 1.0)]]


def tables(text: str) -> list[list[list[str]]]:
    """Every markdown table in ``text``: the header's cells, then each row's."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
        elif current:
            found.append([current[0]] + current[2:])
            current = []
    return found


@pytest.fixture
def conditional_card(tmp_path, offline):
    from helpers import tiny_conditional_pipeline

    pipe = tiny_conditional_pipeline(num_train_timesteps=20, class_frequencies=[0.5, 0.3, 0.2])
    out = tmp_path / "conditional"
    pipe.save_pretrained(out)
    (out / "figures").mkdir()
    (out / "figures" / "class_grid.png").write_bytes(b"png")
    results = run_results(class_bounds=CLASS_BOUNDS, figures={"guidance": {"guidance_tradeoff": TRADEOFF}},
                          num_inference_steps=20)
    run = record(20, results, {"class_grid": "figures/class_grid.png"},
                 data=DataConfig(class_conditional=True), objective=ObjectiveConfig(
                     loss_type="simple", timestep_sampler="uniform", label_dropout=0.15))
    return pipe, out, hub.render_model_card(out, run, repo_id=str(out))


def test_a_class_conditional_card_has_its_tags_bounds_tradeoff_and_classes(conditional_card):
    pipe, out, card = conditional_card
    hub.check_card_metadata(card)
    assert card.data.pipeline_tag is None  # the Hub has no pipeline tag for it, and it is not unconditional
    assert {"conditional-image-generation", "class-conditional-image-generation", "classifier-free-guidance",
            "diffusers", "ddpm", "hf-ddpm"} <= set(card.data.tags)
    assert "unconditional-image-generation" not in card.data.tags
    measured = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert measured == {"bits_per_dim": 2.5, "marginal_bits_per_dim": 2.5123, "null_label_bits_per_dim": 2.6789,
                        "accuracy": 0.8765}
    assert {r.task_type for r in card.data.eval_results} == {"conditional-image-generation"}
    assert list(sections(card.text)) == SECTIONS

    evaluation = section(card.text, "Evaluation")
    bounds, tradeoff = tables(evaluation)
    assert [row[1] for row in bounds[1:]] == ["2.5000 ± 0.0500", "2.5123 ± 0.0456", "2.6789 ± 0.0512", "0.8765"]
    assert bounds[4][2].endswith("6 timesteps per class")
    assert tradeoff[0] == ["guidance scale s", "FD (digits classifier)", "IS (digits classifier)", "precision",
                           "recall", "label accuracy", "bound of the guided chain (bits/dim)"]
    assert [[float(cell.split(" ± ")[0]) for cell in row] for row in tradeoff[1:]] == [
        [r["guidance_scale"], r["fd"], r["score"], r["precision"], r["recall"], r["label_accuracy"],
         r["bits_per_dim"]] for r in TRADEOFF]
    assert re.findall(r"!\[[^\]]*\]\(([^)]+)\)", card.text) == ["figures/class_grid.png"]

    classes = training_table(card.text)["class labels"]
    assert classes.startswith("3 classes (cat, dog, emu); null label ∅ = index 3") and "probability 0.15" in classes
    usage = python_blocks(section(card.text, "Use it"))[0]
    # the guided call asks for two of the model's own class names, at the trade-off's best FD above s = 1
    assert re.findall(r"class_labels=(\[[^\]]*\])", usage) == ['["cat", "dog"]'] * 2
    assert re.findall(r"guidance_scale=([\d.]+)", usage) == ["2.0"]
    without = section(card.text, "Without hf-ddpm (diffusers only)")
    assert len(python_blocks(without)) == 1  # diffusers' DDPMPipeline cannot pass labels: not offered, and why
    assert "class-conditional (`num_class_embeds` = 4)" in without.split("```")[-1]


def test_the_conditional_usage_snippet_runs_and_gives_the_pipelines_images_and_bounds(conditional_card, tmp_path,
                                                                                      monkeypatch):
    pipe, out, card = conditional_card
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(python_blocks(section(card.text, "Use it"))[0], scope)
    seeded = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    chosen = pipe(class_labels=["cat", "dog"], guidance_scale=2.0, num_inference_steps=20, generator=seeded()).images
    as_array = lambda images: np.stack([np.asarray(image) for image in images])  # noqa: E731
    np.testing.assert_array_equal(as_array(scope["chosen"]), as_array(chosen))
    conditional = pipe.log_likelihood(chosen, class_labels=["cat", "dog"], generator=seeded())
    assert torch.equal(scope["conditional"].total, conditional.total)
    marginal = pipe.log_likelihood(scope["images"][:4], generator=seeded())
    assert torch.equal(scope["bound"].total, marginal.total)
    assert scope["bound"].predicted_labels.shape == (4,)


def test_the_metadata_check_knows_a_conditional_card_from_an_unconditional_one(conditional_card):
    _, _, card = conditional_card
    meta = yaml.safe_load(str(card).split("---\n")[1])
    for edit, problem in [(lambda m: m.update(pipeline_tag="unconditional-image-generation"), "pipeline_tag must be "
                                                                                               "None"),
                          (lambda m: m["tags"].append("unconditional-image-generation"), "a model is one or the other"),
                          (lambda m: m["tags"].remove("classifier-free-guidance"), "tags lack")]:
        broken = json.loads(json.dumps(meta))
        edit(broken)
        with pytest.raises(ValueError, match=problem):
            hub.check_card_metadata(f"---\n{yaml.safe_dump(broken, sort_keys=False)}---\n{card.text}")
