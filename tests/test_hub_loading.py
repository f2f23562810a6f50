"""Loading a pushed pipeline back: from a local folder, and offline (HF_HUB_OFFLINE=1) from a Hub cache laid out as
huggingface_hub lays it out — with hf-ddpm, and in a process where hf_ddpm cannot be imported (diffusers only).

The cache is filled with exactly the files the stand-in Hub received from a push. Loading by repo id happens in fresh processes because
huggingface_hub and diffusers read HF_HUB_OFFLINE and HF_HUB_CACHE when they are imported.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler, FourierUNet2DModel, hub
from hf_ddpm.images import make_grid
from hf_ddpm.training.config import HubConfig, ObjectiveConfig, OutputConfig, ProcessConfig, RunConfig
from hf_ddpm.training.record import RunRecord
from hub_support import TOKEN, FakeHub, populate_hub_cache, run_results, tiny_pipeline

REPO_ID = "alice/ddpm-digits"
FOURIER_REPO_ID = "alice/ddpm-digits-fourier"
SEED, STEPS, BATCH = 3, 10, 4


def samples(pipe, steps: int = STEPS) -> np.ndarray:
    out = pipe(batch_size=BATCH, num_inference_steps=steps, generator=torch.Generator().manual_seed(SEED),
               output_type="np")
    return out.images


def run_python(code: str, cache: Path, out: Path) -> dict:
    """Run ``code`` in a fresh interpreter, offline against ``cache``; it writes its findings to ``out``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "hf_home"),
           "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "DIFFUSERS_VERBOSITY": "error"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=out.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def push_to_cache(root: Path, pipe, repo_id: str) -> tuple:
    """A trained-looking output folder of ``pipe``, pushed to the stand-in Hub as ``repo_id``, and a Hub cache holding
    what the Hub received: ``(pipe, folder, cache, snapshot, repo_id)``."""
    folder = root / repo_id.split("/")[1]
    pipe.save_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    pipe(batch_size=4, num_inference_steps=2).images[0].save(folder / "samples.png")
    T = pipe.scheduler.config.num_train_timesteps
    record = RunRecord(RunConfig(process=ProcessConfig(num_train_timesteps=T, variance_type="fixed_small"),
                                 objective=ObjectiveConfig(loss_type="simple", timestep_sampler="uniform"),
                                 output=OutputConfig(num_inference_steps=T, eval_inference_steps=T),
                                 hub=HubConfig(hub_model_id=repo_id)),
                       run_results(test_bits_per_dim=3.0), images={"samples": "samples.png"})
    record.save(folder)
    hub.write_model_card(folder, record)
    with FakeHub() as server, pytest.MonkeyPatch.context() as patch:  # push it, through the real client
        patch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        hub.push_output_folder(folder, repo_id, token=TOKEN)
    snapshot = populate_hub_cache(root / "cache", repo_id, server.repos[repo_id]["files"])
    return pipe, folder, root / "cache", snapshot, repo_id


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """A pipeline with diffusers' UNet2DModel, pushed and cached."""
    return push_to_cache(tmp_path_factory.mktemp("hub"), tiny_pipeline(num_train_timesteps=50), REPO_ID)


@pytest.fixture(scope="module")
def pushed_fourier(tmp_path_factory):
    """A pipeline with hf-ddpm's FourierUNet2DModel, pushed and cached."""
    pipe = tiny_pipeline(num_train_timesteps=20, fourier_periods=(1.0, 4.0, 16.0))
    return push_to_cache(tmp_path_factory.mktemp("hub_fourier"), pipe, FOURIER_REPO_ID)


def test_local_folder_round_trip(pushed):
    pipe, folder, _, _, _ = pushed
    loaded = DDPMDocPipeline.from_pretrained(folder)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is DDPMDocScheduler
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.scheduler.config) == public(pipe.scheduler.config)
    for name, tensor in pipe.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], tensor), name
    np.testing.assert_array_equal(samples(loaded), samples(pipe))


WITH_HF_DDPM = textwrap.dedent(
    f"""
    import json, re, numpy as np, torch
    from diffusers import DiffusionPipeline
    from hf_ddpm import DDPMDocPipeline
    pipe = DDPMDocPipeline.from_pretrained({REPO_ID!r})
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size={BATCH}, num_inference_steps={STEPS}, generator=torch.Generator().manual_seed({SEED}),
                  output_type="np").images
    np.save("with_hf_ddpm.npy", images)
    bound = pipe.log_likelihood(images, generator=torch.Generator().manual_seed({SEED}))
    from hf_ddpm.cli import main  # the card's command line: hf-ddpm sample --model <repo id>
    main(["sample", "--model", {REPO_ID!r}, "--num-images", "{BATCH}", "--steps", "{STEPS}", "--seed", "{SEED}",
          "--out", "cli_grid.png"])
    try:
        generic = DiffusionPipeline.from_pretrained({REPO_ID!r})
        generic = [type(generic).__name__, type(generic.scheduler).__name__]
    except AttributeError as error:
        generic = [type(error).__name__, str(error)]
    # the card's usage snippet, run as a user would (it loads {REPO_ID!r} from the cache)
    from huggingface_hub import hf_hub_download
    card = open(hf_hub_download({REPO_ID!r}, "README.md"), encoding="utf-8").read()
    snippet = re.findall(r"```python\\n(.*?)```", card, flags=re.S)[0]
    scope = {{}}
    exec(snippet, scope)
    json.dump({{"bound": bound.total.tolist(), "generic": generic,
               "snippet_images": len(scope["images"]), "snippet_fast": len(scope["fast"]),
               "snippet_bound": scope["bound"].total.tolist()}}, open("out.json", "w"))
    """
)

def without_hf_ddpm(repo_id: str) -> str:
    """The start of a script that cannot import hf_ddpm and has run the first recipe for users without hf-ddpm (the
    bundled code through diffusers' remote-code loader) as the card of ``repo_id`` writes it: ``recipes`` holds them
    all, ``scope`` the first one's names, ``generator()`` a generator seeded by SEED."""
    return textwrap.dedent(
        f"""
        import sys
        sys.modules["hf_ddpm"] = None  # this interpreter cannot import hf_ddpm, as if it were not installed
        import json, re, numpy as np, torch
        from huggingface_hub import hf_hub_download
        try:
            import hf_ddpm.scheduler
            raise SystemExit("hf_ddpm is importable")
        except ImportError:
            pass
        generator = lambda: torch.Generator().manual_seed({SEED})
        card = open(hf_hub_download({repo_id!r}, "README.md"), encoding="utf-8").read()
        section = card.split("### Without hf-ddpm (diffusers only)")[1].split("\\n## ")[0]
        recipes = re.findall(r"```python\\n(.*?)```", section, flags=re.S)
        scope = {{}}
        exec(recipes[0], scope)
        """
    )


def diffusers_only(repo_id: str) -> str:
    """A script that cannot import hf_ddpm and runs the card's recipes for users without hf-ddpm, as the card of
    ``repo_id`` writes them, then what the card says diffusers cannot do."""
    return without_hf_ddpm(repo_id) + textwrap.dedent(
        f"""
        from diffusers import DiffusionPipeline, UNet2DModel
        # 1. the bundled code through diffusers' remote-code loader: the card's 16 images, then our own calls
        folder, pipe = scope["folder"], scope["pipe"]
        np.save("card_images.npy", np.stack([np.asarray(image) for image in scope["images"]]))
        pipe.set_progress_bar_config(disable=True)
        images = pipe(batch_size={BATCH}, num_inference_steps={STEPS}, generator=generator(), output_type="np").images
        np.save("remote_code.npy", images)
        found = {{"recipes": len(recipes), "bound": pipe.log_likelihood(images, generator=generator()).total.tolist(),
                 "remote_modules": [type(pipe).__module__, type(pipe.unet).__module__],
                 "unet_class": type(pipe.unet).__name__}}
        # 2. diffusers' own DDPMPipeline, no remote code, where the card offers it
        if len(recipes) > 1:
            scope = {{}}
            exec(recipes[1], scope)
            pipe = scope["pipe"]
            pipe.set_progress_bar_config(disable=True)
            found["fallback_class"] = type(pipe).__name__
            images = pipe(batch_size={BATCH}, num_inference_steps={STEPS}, generator=generator(), output_type="np").images
            np.save("diffusers_only.npy", images)
        # diffusers' UNet2DModel on the pushed weights (a FourierUNet2DModel's: the card says it cannot)
        try:
            UNet2DModel.from_pretrained(folder, subfolder="unet")
            found["plain_unet"] = "loaded"
        except Exception as error:
            found["plain_unet"] = f"{{type(error).__name__}}: {{error}}"
        # what the card says diffusers cannot do: custom_pipeline + trust_remote_code stops at the scheduler's library
        try:
            DiffusionPipeline.from_pretrained({repo_id!r}, custom_pipeline=folder + "/remote_code/hf_ddpm_remote.py",
                                              trust_remote_code=True)
            found["custom_pipeline"] = "loaded"
        except ValueError as error:
            found["custom_pipeline"] = str(error)
        found["modules"] = sorted(m for m in sys.modules if m.startswith("hf_ddpm") and sys.modules[m] is not None)
        json.dump(found, open("out.json", "w"))
        """
    )


def test_offline_from_the_hub_cache_with_hf_ddpm(pushed, tmp_path):
    pipe, _, cache, _, _ = pushed
    found = run_python(WITH_HF_DDPM, cache, tmp_path / "out.json")
    assert found["generic"] == ["DDPMDocPipeline", "DDPMDocScheduler"]  # plain DiffusionPipeline.from_pretrained
    np.testing.assert_array_equal(np.load(tmp_path / "with_hf_ddpm.npy"), samples(pipe))
    expected = pipe.log_likelihood(samples(pipe), generator=torch.Generator().manual_seed(SEED)).total
    np.testing.assert_allclose(found["bound"], expected.numpy(), rtol=1e-6)
    expected_grid = np.asarray(make_grid(samples(pipe)))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "cli_grid.png")), expected_grid)
    # the card's snippet ran against the cached repo: 16 images, 16 in fewer steps, a finite bound for 4 of them
    assert (found["snippet_images"], found["snippet_fast"]) == (16, 16)
    assert len(found["snippet_bound"]) == 4 and all(np.isfinite(found["snippet_bound"]))


@pytest.mark.parametrize("which", ["pushed", "pushed_fourier"])
def test_offline_from_the_hub_cache_with_diffusers_only(which, request, tmp_path):
    pipe, _, cache, _, repo_id = request.getfixturevalue(which)
    fourier = isinstance(pipe.unet, FourierUNet2DModel)
    found = run_python(diffusers_only(repo_id), cache, tmp_path / "out.json")
    assert found["modules"] == [] and all(m.startswith("diffusers_modules.") for m in found["remote_modules"][:fourier + 1])
    assert found["unet_class"] == type(pipe.unet).__name__
    # the card's remote-code recipe as written gives the very images of hf-ddpm's pipeline with the same arguments
    T = pipe.scheduler.config.num_train_timesteps
    card_images = pipe(batch_size=16, num_inference_steps=T, generator=torch.Generator().manual_seed(0)).images
    np.testing.assert_array_equal(np.load(tmp_path / "card_images.npy"), np.stack([np.asarray(i) for i in card_images]))
    # and the pipeline it built gives the very same images and bound as hf-ddpm's
    np.testing.assert_array_equal(np.load(tmp_path / "remote_code.npy"), samples(pipe))
    expected = pipe.log_likelihood(samples(pipe), generator=torch.Generator().manual_seed(SEED)).total
    np.testing.assert_allclose(found["bound"], expected.numpy(), rtol=1e-6)
    if fourier:  # no DDPMPipeline recipe: diffusers' UNet2DModel cannot take the weights, as the card says
        assert found["recipes"] == 1 and "fallback_class" not in found
        assert "conv_in" in found["plain_unet"], found["plain_unet"]
    else:  # diffusers' own DDPMPipeline samples the same model: same images up to float32 rounding of its schedule
        assert found["recipes"] == 2 and found["fallback_class"] == "DDPMPipeline" and found["plain_unet"] == "loaded"
        np.testing.assert_allclose(np.load(tmp_path / "diffusers_only.npy"), samples(pipe), atol=1e-4)
    refused = re.match(r"(\S+) is not one of the libraries", found["custom_pipeline"])  # whichever diffusers met first
    assert refused and refused.group(1) in ({"hf_ddpm.scheduler", "hf_ddpm.fourier_unet"} if fourier else {"hf_ddpm.scheduler"})


def test_pushed_files_are_what_loading_reads(pushed):
    """The cache holds the pushed files only; model_index.json names hf-ddpm's classes, no file of remote_code/."""
    _, folder, _, snapshot, _ = pushed
    cached = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert cached == sorted(hub.files_to_push(folder) + list(hub.remote_code_files()))
    assert {f.split("/")[0] for f in cached if f.endswith(".py")} == {"remote_code"}
    model_index = json.loads((snapshot / "model_index.json").read_text())
    assert model_index["_class_name"] == "DDPMDocPipeline"
    assert model_index["scheduler"] == ["hf_ddpm.scheduler", "DDPMDocScheduler"]
    assert model_index["unet"] == ["diffusers", "UNet2DModel"]
    assert re.search(r'DDPMDocPipeline\.from_pretrained\("alice/ddpm-digits"\)', (snapshot / "README.md").read_text())


CONDITIONAL_REPO_ID = "alice/ddpm-digits-conditional"


@pytest.fixture(scope="module")
def pushed_conditional(tmp_path_factory):
    """A class-conditional pipeline (classes cat, dog, emu and the null label 3), pushed and cached."""
    from helpers import tiny_conditional_pipeline

    pipe = tiny_conditional_pipeline(num_train_timesteps=20, class_frequencies=[0.5, 0.3, 0.2])
    return push_to_cache(tmp_path_factory.mktemp("hub_conditional"), pipe, CONDITIONAL_REPO_ID)


def test_a_class_conditional_model_through_the_cards_diffusers_only_recipe(pushed_conditional, tmp_path):
    """Without hf_ddpm, the card's remote-code recipe builds the pipeline with its classes, null label and π(y) (from
    model_index.json): guided samples by class name, the guided chain's bound and the marginal bound are hf-ddpm's."""
    pipe, _, cache, _, repo_id = pushed_conditional
    script = without_hf_ddpm(repo_id) + textwrap.dedent(
        f"""
        pipe = scope["pipe"]
        pipe.set_progress_bar_config(disable=True)
        out = pipe(class_labels=["emu", "cat", "dog", "emu"], guidance_scale=2.0, num_inference_steps={STEPS},
                   generator=generator(), output_type="np")
        np.save("guided.npy", out.images)
        guided = pipe.log_likelihood(out.images, class_labels=["emu", "cat", "dog", "emu"], guidance_scale=2.0,
                                     generator=generator())
        marginal = pipe.log_likelihood(out.images, generator=generator())
        json.dump({{"recipes": len(recipes), "labels": out.class_labels.tolist(), "guided": guided.total.tolist(),
                   "marginal": marginal.total.tolist(), "predicted": marginal.predicted_labels.tolist(),
                   "classes": [pipe.num_classes, pipe.conditioning.null_class_label,
                               list(pipe.conditioning.class_frequencies)],
                   "module": type(pipe).__module__,
                   "modules": sorted(m for m in sys.modules if m.startswith("hf_ddpm") and sys.modules[m] is not None)}},
                  open("out.json", "w"))
        """
    )
    found = run_python(script, cache, tmp_path / "out.json")
    assert found["modules"] == [] and found["module"].startswith("diffusers_modules.")
    assert found["recipes"] == 1  # no DDPMPipeline recipe: it cannot pass labels
    assert found["classes"] == [3, 3, [0.5, 0.3, 0.2]] and found["labels"] == [2, 0, 1, 2]
    labels = ["emu", "cat", "dog", "emu"]
    expected = pipe(class_labels=labels, guidance_scale=2.0, num_inference_steps=STEPS,
                    generator=torch.Generator().manual_seed(SEED), output_type="np").images
    np.testing.assert_array_equal(np.load(tmp_path / "guided.npy"), expected)
    guided = pipe.log_likelihood(expected, class_labels=labels, guidance_scale=2.0,
                                 generator=torch.Generator().manual_seed(SEED))
    np.testing.assert_allclose(found["guided"], guided.total.numpy(), rtol=1e-6)
    marginal = pipe.log_likelihood(expected, generator=torch.Generator().manual_seed(SEED))
    np.testing.assert_allclose(found["marginal"], marginal.total.numpy(), rtol=1e-6)
    assert found["predicted"] == marginal.predicted_labels.tolist()
