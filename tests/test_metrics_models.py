"""hf_ddpm.metrics with real transformers models: the built-in digits evaluator and a tiny DINOv2 from the Hub cache."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from hf_ddpm.data import digits_split
from hf_ddpm.metrics import frechet_distance, load_digits_evaluator, sample_quality
from hf_ddpm.metrics.digits_evaluator import EVALUATOR_VERSION, train_digits_evaluator
from hf_ddpm.metrics.reference import reference_points


@pytest.fixture(scope="module")
def evaluator():
    return load_digits_evaluator()


def test_shipped_digits_evaluator_accuracy(evaluator):
    net, record = evaluator
    test_images, test_labels = digits_split("test")
    pixels = (torch.from_numpy(test_images).float() / 255.0 - 0.5) / 0.5  # its processor: mean 0.5, std 0.5
    with torch.no_grad():
        accuracy = (net.model(pixel_values=pixels).logits.argmax(-1).numpy() == test_labels).mean()
    assert accuracy >= 0.97
    assert record["evaluator_test_accuracy"] == pytest.approx(accuracy)
    assert record["evaluator_seed"] == 0 and record["evaluator_version"] == EVALUATOR_VERSION


def test_the_recipe_trains_an_evaluator_as_accurate(tmp_path):
    """Retraining gives other weights on another CPU (see the module docstring), but an evaluator as good."""
    from transformers import ViTForImageClassification

    accuracy = train_digits_evaluator(tmp_path)
    assert accuracy >= 0.97
    saved = ViTForImageClassification.from_pretrained(tmp_path).config.hf_ddpm_evaluator
    assert saved["test_accuracy"] == accuracy and saved["version"] == EVALUATOR_VERSION


def test_digits_reference_points_order_real_blurred_noise(evaluator):
    real, blurred, noise = reference_points(359, repeats=1)
    assert real["fd_mean"] < blurred["fd_mean"] < noise["fd_mean"]
    assert real["precision_mean"] > blurred["precision_mean"] > noise["precision_mean"]
    assert real["inception_score_mean"] > 8.0 > blurred["inception_score_mean"] > noise["inception_score_mean"]
    assert real["fd_name"] == "FD (digits classifier)"


def test_digits_sample_quality_record(evaluator):
    train, _ = digits_split("train")
    test, _ = digits_split("test")
    q = sample_quality(train[:359], test, progress=False)
    assert sum(q["class_histogram"]) == 359 and min(q["class_histogram"]) > 0.05 * 359  # all ten classes used
    assert q["evaluator_test_accuracy"] >= 0.97 and q["evaluator_seed"] == 0
    assert q["evaluator_version"] == EVALUATOR_VERSION
    assert q["num_samples"] == q["num_reference"] == 359
    assert json.loads(json.dumps(q)) == q  # JSON-safe as it is


def test_rgb_input_to_the_grey_digits_evaluator(evaluator):
    # RGB images with three equal channels are their grey image (BT.601 weights sum to 1), as PIL images too
    from PIL import Image

    train, _ = digits_split("train")
    test, _ = digits_split("test")
    grey = sample_quality(train[:100], test, progress=False)
    rgb = sample_quality([Image.fromarray(image[0]).convert("RGB") for image in train[:100]], test, progress=False)
    assert rgb["fd"] == pytest.approx(grey["fd"], rel=1e-9) and rgb["class_histogram"] == grey["class_histogram"]


def test_digits_fd_uses_penultimate_features(evaluator):
    # independent route to the features: the ViT backbone's CLS token (the classifier head's input)
    net, _ = evaluator
    train, _ = digits_split("train")
    test, _ = digits_split("test")

    def cls_features(images_uint8):
        pixels = (torch.from_numpy(images_uint8).float() / 255.0 - 0.5) / 0.5
        with torch.no_grad():
            return net.model.vit(pixel_values=pixels).last_hidden_state[:, 0].double().numpy()

    expected = frechet_distance(cls_features(train[:200]), cls_features(test))
    assert sample_quality(train[:200], test, progress=False)["fd"] == pytest.approx(expected, rel=1e-5)


def _tiny_dinov2(folder):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          image_size=28, patch_size=14)
    model = Dinov2Model(config).eval()
    processor = BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28},
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


def _populate_hub_cache(cache, repo_id, folder):
    """huggingface_hub's cache layout: models--org--name/{snapshots/<commit>/…, refs/main}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


OFFLINE_SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np, torch
    from hf_ddpm.metrics import image_features, load_image_model, sample_quality
    from hf_ddpm.metrics.images import as_image_batch
    folder, repo_id, grey = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
    out = {}
    for key, name in (("by_path", folder), ("by_id", repo_id)):
        net = load_image_model(name, task="features", role="feature_model")
        out[key] = image_features(as_image_batch(grey, "x"), net, progress=False).tolist()
    q = sample_quality(grey, grey[::-1].copy(), feature_model=repo_id, progress=False)
    out["fd_name"], out["fd"], out["feature_model"] = q["fd_name"], q["fd"], q["feature_model"]
    try:
        load_image_model("org/not-in-cache", task="features", role="feature_model")
    except OSError as err:
        out["missing"] = str(err)
    print("RESULT" + json.dumps(out))
""")


def test_tiny_dinov2_offline_by_path_and_by_hub_id_with_grey_input(tmp_path):
    folder = tmp_path / "tiny-dinov2"
    model, processor = _tiny_dinov2(folder)
    _populate_hub_cache(tmp_path / "hub", "org/tiny-dinov2", folder)
    grey = np.random.default_rng(0).uniform(size=(6, 8, 8)).astype(np.float32)
    np.save(tmp_path / "grey.npy", grey)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"), HF_HOME=str(tmp_path / "home"),
               OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, str(folder), "org/tiny-dinov2",
                           str(tmp_path / "grey.npy")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.split("RESULT", 1)[1])

    # independent route: the grey images as 8-bit RGB by hand, the processor and the model called directly
    rgb = torch.from_numpy(np.rint(grey * 255).astype(np.uint8))[:, None].repeat(1, 3, 1, 1)
    with torch.no_grad():
        pixels = processor(images=rgb, return_tensors="pt")["pixel_values"]
        expected = model(pixel_values=pixels).pooler_output.double().numpy()
    np.testing.assert_allclose(out["by_path"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["by_id"], expected, rtol=1e-5, atol=1e-6)
    assert out["fd_name"] == "FD_DINOv2" and out["feature_model"] == "org/tiny-dinov2"
    assert out["fd"] < 1e-9  # the same images in another order: the same Gaussian
    assert "org/not-in-cache" in out["missing"] and "HF_HUB_OFFLINE=1" in out["missing"]
    assert "hf download org/not-in-cache" in out["missing"]


def test_score_from_any_image_classifier_folder(tmp_path):
    # a tiny RGB ViT classifier saved to a folder; grey digits in; the score from its own logits by hand
    from scipy.special import rel_entr, softmax
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    classifier = ViTForImageClassification(ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=5)).eval()
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    classifier.save_pretrained(tmp_path / "classifier")
    processor.save_pretrained(tmp_path / "classifier")
    _tiny_dinov2(tmp_path / "features")
    train, _ = digits_split("train")
    q = sample_quality(train[:40], train[40:80], feature_model=str(tmp_path / "features"),
                       classifier=str(tmp_path / "classifier"), progress=False)
    with torch.no_grad():
        rgb = torch.from_numpy(train[:40]).repeat(1, 3, 1, 1)
        logits = classifier(pixel_values=processor(images=rgb, return_tensors="pt")["pixel_values"]).logits
    probs = softmax(logits.double().numpy(), axis=1)
    assert q["inception_score"] == pytest.approx(np.exp(rel_entr(probs, probs.mean(0)).sum(1).mean()), rel=1e-5)
    assert q["class_histogram"] == np.bincount(probs.argmax(1), minlength=5).tolist()
    assert q["score_name"] == f"IS ({tmp_path / 'classifier'})" and "evaluator_version" not in q


def test_bad_feature_model_path_is_a_clear_error(tmp_path):
    images = np.zeros((4, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="feature_model.*neither an existing folder"):
        sample_quality(images, images, feature_model=str(tmp_path / "missing"), progress=False)
    with pytest.raises(ValueError, match="generated as float images must lie in"):
        sample_quality(images - 1, images, feature_model=str(tmp_path / "missing"), progress=False)
