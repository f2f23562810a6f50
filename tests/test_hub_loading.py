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

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler, hub
from hf_ddpm.images import make_grid
from hub_support import TOKEN, FakeHub, populate_hub_cache, tiny_pipeline

REPO_ID = "alice/ddpm-digits"
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


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """A trained-looking output folder, pushed to the stand-in Hub, and a Hub cache holding what the Hub received."""
    root = tmp_path_factory.mktemp("hub")
    pipe = tiny_pipeline(num_train_timesteps=50)
    folder = root / "ddpm-digits"
    pipe.save_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    pipe(batch_size=4, num_inference_steps=2).images[0].save(folder / "samples.png")
    hub.write_model_card(folder, args={"hub_model_id": REPO_ID, "loss_type": "simple"},
                         metrics={"test_bits_per_dim": 3.0}, sample_grid="samples.png")
    with FakeHub() as server, pytest.MonkeyPatch.context() as patch:  # push it, through the real client
        patch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        hub.push_output_folder(folder, REPO_ID, token=TOKEN)
    snapshot = populate_hub_cache(root / "cache", REPO_ID, server.repos[REPO_ID]["files"])
    return pipe, folder, root / "cache", snapshot


def test_local_folder_round_trip(pushed):
    pipe, folder, _, _ = pushed
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

DIFFUSERS_ONLY = textwrap.dedent(
    f"""
    import sys
    sys.modules["hf_ddpm"] = None  # this interpreter cannot import hf_ddpm, as if it were not installed
    import json, numpy as np, torch
    from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline, UNet2DModel
    from diffusers.utils import get_class_from_dynamic_module
    from huggingface_hub import snapshot_download
    try:
        import hf_ddpm.scheduler
        raise SystemExit("hf_ddpm is importable")
    except ImportError:
        pass
    generator = lambda: torch.Generator().manual_seed({SEED})
    # the card's recipes for users without hf-ddpm: 1. the bundled code through diffusers' remote-code loader
    folder = snapshot_download({REPO_ID!r})
    DDPMDocPipeline = get_class_from_dynamic_module(folder, "hf_ddpm_remote.py", subfolder="remote_code",
                                                    class_name="DDPMDocPipeline", trust_remote_code=True)
    pipe = DDPMDocPipeline(unet=UNet2DModel.from_pretrained(folder, subfolder="unet"),
                           scheduler=DDPMScheduler.from_pretrained(folder, subfolder="scheduler"))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size={BATCH}, num_inference_steps={STEPS}, generator=generator(), output_type="np").images
    np.save("remote_code.npy", images)
    bound = pipe.log_likelihood(images, generator=generator()).total.tolist()
    # 2. diffusers' own DDPMPipeline, no remote code
    unet = UNet2DModel.from_pretrained({REPO_ID!r}, subfolder="unet")
    scheduler = DDPMScheduler.from_pretrained({REPO_ID!r}, subfolder="scheduler")
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size={BATCH}, num_inference_steps={STEPS}, generator=generator(), output_type="np").images
    np.save("diffusers_only.npy", images)
    # what the card says diffusers cannot do: custom_pipeline + trust_remote_code stops at the scheduler's library
    try:
        DiffusionPipeline.from_pretrained({REPO_ID!r}, custom_pipeline=folder + "/remote_code/hf_ddpm_remote.py",
                                          trust_remote_code=True)
        custom_pipeline = "loaded"
    except ValueError as error:
        custom_pipeline = str(error)
    json.dump({{"modules": sorted(m for m in sys.modules if m.startswith("hf_ddpm") and sys.modules[m] is not None),
               "bound": bound, "remote_class": DDPMDocPipeline.__module__, "custom_pipeline": custom_pipeline}},
              open("out.json", "w"))
    """
)


def test_offline_from_the_hub_cache_with_hf_ddpm(pushed, tmp_path):
    pipe, _, cache, _ = pushed
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


def test_offline_from_the_hub_cache_with_diffusers_only(pushed, tmp_path):
    pipe, _, cache, _ = pushed
    found = run_python(DIFFUSERS_ONLY, cache, tmp_path / "out.json")
    assert found["modules"] == [] and found["remote_class"].startswith("diffusers_modules.")
    # the bundled code through diffusers' remote-code loader: the very same images and bound
    np.testing.assert_array_equal(np.load(tmp_path / "remote_code.npy"), samples(pipe))
    expected = pipe.log_likelihood(samples(pipe), generator=torch.Generator().manual_seed(SEED)).total
    np.testing.assert_allclose(found["bound"], expected.numpy(), rtol=1e-6)
    # diffusers' own DDPMPipeline samples the same model: same images up to float32 rounding of its schedule
    np.testing.assert_allclose(np.load(tmp_path / "diffusers_only.npy"), samples(pipe), atol=1e-4)
    assert "hf_ddpm.scheduler is not one of the libraries" in found["custom_pipeline"]


def test_pushed_files_are_what_loading_reads(pushed):
    """The cache holds the pushed files only; model_index.json names hf-ddpm's classes, no file of remote_code/."""
    _, folder, _, snapshot = pushed
    cached = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert cached == sorted(hub.files_to_push(folder) + list(hub.remote_code_files()))
    assert {f.split("/")[0] for f in cached if f.endswith(".py")} == {"remote_code"}
    model_index = json.loads((snapshot / "model_index.json").read_text())
    assert model_index["_class_name"] == "DDPMDocPipeline"
    assert model_index["scheduler"] == ["hf_ddpm.scheduler", "DDPMDocScheduler"]
    assert model_index["unet"] == ["diffusers", "UNet2DModel"]
    assert re.search(r'DDPMDocPipeline\.from_pretrained\("alice/ddpm-digits"\)', (snapshot / "README.md").read_text())
