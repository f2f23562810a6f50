"""Data loading: the digits split, image folders and Hub datasets through `datasets`, transforms, and the checks."""

import os

import datasets
import huggingface_hub
import numpy as np
import pytest
import torch
from datasets.packaged_modules.parquet.parquet import Parquet
from PIL import Image

from hf_ddpm.data import ImageDataset, digits_split, load_eval_images, load_image_data


def _model_range(uint8_array) -> np.ndarray:
    """The expected [−1, 1] values, computed in float64."""
    return np.asarray(uint8_array, dtype=np.float64) / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------------------------
# digits


def test_digits_split_sizes_and_8bit_mapping_match_sklearn():
    from sklearn.datasets import load_digits

    raw = load_digits().images  # levels 0..16, float64
    data = load_image_data()
    assert (len(data.train), len(data.eval)) == (1438, 359)
    assert (data.channels, data.resolution, data.eval_split) == (1, 8, "test")
    test_index = [i for i in range(len(raw)) if i % 5 == 4]
    train_index = [i for i in range(len(raw)) if i % 5 != 4]
    expected_test = np.round(raw[test_index] * 255.0 / 16.0) / 127.5 - 1.0
    np.testing.assert_allclose(data.eval.tensor()[:, 0].numpy(), expected_test, atol=1e-6)
    expected_train = np.round(raw[train_index] * 255.0 / 16.0) / 127.5 - 1.0
    np.testing.assert_allclose(data.train[17][0].numpy(), expected_train[17], atol=1e-6)
    # every value is one of the 256 bins, and level 16 maps to exactly +1
    values = torch.unique(data.eval.tensor())
    np.testing.assert_allclose(((values + 1) * 127.5).numpy(), np.round(((values + 1) * 127.5).numpy()), atol=1e-4)
    assert float(values.max()) == 1.0 and float(values.min()) == -1.0


def test_digits_through_a_dataloader_with_workers_equals_direct_indexing():
    data = load_image_data()
    loader = torch.utils.data.DataLoader(data.train, batch_size=64, num_workers=2)
    batches = list(loader)
    assert batches[0].shape == (64, 1, 8, 8) and batches[0].dtype == torch.float32
    direct = torch.stack([data.train[i] for i in range(len(data.train))])
    torch.testing.assert_close(torch.cat(batches), direct, rtol=0, atol=0)


def test_digits_eval_subset_is_spread_over_the_split():
    held_out = load_eval_images(num_images=10)
    test_images, _ = digits_split("test")
    assert len(held_out) == 10
    np.testing.assert_allclose(held_out.tensor()[-1].numpy(), _model_range(test_images[-1]), atol=1e-6)
    np.testing.assert_allclose(held_out.tensor()[0].numpy(), _model_range(test_images[0]), atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# image folders


def _write_folder(root, arrays, names=None):
    os.makedirs(root, exist_ok=True)
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(os.path.join(root, (names or {}).get(i, f"img{i:02d}.png")))


@pytest.fixture
def grey_arrays():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (8, 10), dtype=np.uint8) for _ in range(20)]  # H=8, W=10


def test_grey_imagefolder_channels_range_and_center_crop(tmp_path, grey_arrays):
    _write_folder(tmp_path / "train", grey_arrays[:15])
    _write_folder(tmp_path / "test", grey_arrays[15:])
    data = load_image_data(train_data_dir=str(tmp_path), resolution=8, center_crop=True, cache_dir=str(tmp_path / "c"))
    assert (data.channels, data.resolution, data.eval_split) == (1, 8, "test")
    assert (len(data.train), len(data.eval)) == (15, 5)
    held_out = data.eval.tensor()
    assert held_out.shape == (5, 1, 8, 8)
    # the shorter side is already 8: no resize, the centre crop keeps columns 1..8 of the 10
    expected = np.stack([_model_range(a[:, 1:9]) for a in grey_arrays[15:]])[:, None]
    order = lambda images: sorted(images, key=lambda x: x.astype(np.float32).tobytes())  # noqa: E731
    np.testing.assert_allclose(np.stack(order(held_out.numpy())), np.stack(order(expected)), atol=1e-6)
    assert held_out.min() >= -1 and held_out.max() <= 1


def test_random_crop_and_flip_are_deterministic_per_epoch(tmp_path, grey_arrays):
    _write_folder(tmp_path / "train", grey_arrays[:4])
    data = load_image_data(
        train_data_dir=str(tmp_path), resolution=8, center_crop=False, random_flip=True, validation_fraction=0.25,
        cache_dir=str(tmp_path / "c"),
    )
    source = {a.tobytes(): a for a in grey_arrays[:4]}
    stored = data.train.images[0]["image"]
    original = np.asarray(Image.open(stored["path"]))
    candidates = []
    for left in range(3):  # width 10 → 3 possible crops, each maybe flipped
        crop = original[:, left : left + 8]
        candidates += [crop, crop[:, ::-1]]
    seen = set()
    for epoch in range(12):
        data.train.set_epoch(epoch)
        first = data.train.uint8(0)[0]
        assert np.array_equal(first, data.train.uint8(0)[0])  # the same epoch gives the same image
        matches = [i for i, c in enumerate(candidates) if np.array_equal(first, c)]
        assert matches, "the augmented image is not a crop (or mirrored crop) of the original"
        seen.add(matches[0])
    assert len(seen) > 2  # different epochs draw different crops/flips
    assert original.tobytes() in source


class _Unreadable:
    def __init__(self, length):
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        raise AssertionError(f"image {index} was decoded again")


def test_kept_decoded_images_give_the_same_items_and_respect_the_memory_limit(tmp_path, grey_arrays):
    _write_folder(tmp_path / "train", grey_arrays[:12])
    options = dict(train_data_dir=str(tmp_path), resolution=6, center_crop=False, random_flip=True,
                   validation_fraction=0.25, cache_dir=str(tmp_path / "c"))
    per_item, kept = load_image_data(**options).train, load_image_data(**options).train
    # 8×10 images resized to 6×8 (shorter side 6), one byte per pixel: 48 bytes each
    assert not kept.keep_decoded(48 * len(kept) - 1) and kept.decoded is None  # one byte short: not kept
    assert kept.keep_decoded(48 * len(kept)) and len(kept.decoded) == len(kept)
    assert all(image.shape == (1, 6, 8) for image in kept.decoded)
    for epoch in range(4):  # random crops and flips: the same draws, the same pixels
        per_item.set_epoch(epoch)
        kept.set_epoch(epoch)
        for index in range(len(kept)):
            assert np.array_equal(kept.uint8(index), per_item.uint8(index))
    kept.images = _Unreadable(len(kept))  # once the images are kept, the source is not read again
    loader = torch.utils.data.DataLoader(kept, batch_size=3, num_workers=1)
    torch.testing.assert_close(torch.cat(list(loader)), per_item.tensor(), rtol=0, atol=0)


def test_rgb_and_mixed_folders_give_three_channels(tmp_path):
    rng = np.random.default_rng(2)
    rgb = [rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for _ in range(4)]
    grey = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    _write_folder(tmp_path / "data" / "train", rgb + [grey])
    _write_folder(tmp_path / "data" / "test", rgb[:1])
    data = load_image_data(train_data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "c"))
    assert (data.channels, data.resolution) == (3, 6)  # resolution inferred from the square images
    np.testing.assert_allclose(data.eval[0].numpy(), _model_range(rgb[0].transpose(2, 0, 1)), atol=1e-6)
    grey_as_rgb = np.repeat(grey[None], 3, axis=0)  # a grey image among colour ones is repeated to RGB
    assert any(np.array_equal(data.train.uint8(i), grey_as_rgb) for i in range(len(data.train)))


def test_resize_keeps_a_constant_image_constant(tmp_path):
    _write_folder(tmp_path / "train", [np.full((16, 24), 200, np.uint8)] * 3)
    data = load_image_data(train_data_dir=str(tmp_path), resolution=8, center_crop=True, cache_dir=str(tmp_path / "c"))
    image = data.train[0]
    assert image.shape == (1, 8, 8)
    np.testing.assert_allclose(image.numpy(), 200 / 127.5 - 1, atol=1e-6)


def test_corrupt_image_is_reported_by_file_before_training(tmp_path, grey_arrays):
    _write_folder(tmp_path / "train", grey_arrays[:5])
    (tmp_path / "train" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    with pytest.raises(ValueError, match=r"broken\.png.*cannot be decoded"):
        load_image_data(train_data_dir=str(tmp_path), validation_fraction=0.2, cache_dir=str(tmp_path / "c"))


def test_missing_and_non_image_columns_are_named(tmp_path, grey_arrays):
    for label in ("a", "b"):  # class sub-folders give a ClassLabel column 'label'
        _write_folder(tmp_path / "train" / label, grey_arrays[:3])
    common = dict(train_data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"image_column 'pixels' is not a column.*\['image', 'label'\]"):
        load_image_data(image_column="pixels", **common)
    with pytest.raises(ValueError, match=r"image_column 'label'.*not images"):
        load_image_data(image_column="label", **common)


def test_empty_sources_are_reported(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="train_data_dir .*empty"):
        load_image_data(train_data_dir=str(tmp_path / "empty"), cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="not a directory"):
        load_image_data(train_data_dir=str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="not both"):
        load_image_data(dataset_name="x/y", train_data_dir=str(tmp_path))


# ----------------------------------------------------------------------------------------------------------------
# datasets from parquet files and from the Hub cache, offline


def _image_table(arrays):
    features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict(
        {"img": [Image.fromarray(a) for a in arrays], "label": list(range(len(arrays)))}, features=features
    )


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 for code that already imported `datasets` and `huggingface_hub`."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _populate_hub_cache(cache_dir, repo_id, splits):
    """Write `datasets`' own cache entry for a Hub dataset (the layout a download leaves:
    <cache>/<namespace>___<name>/<config>/<version>/<commit>/<name>-<split>.arrow) from parquet files."""
    namespace, name = repo_id.split("/")
    source = cache_dir / "parquet-source"
    source.mkdir(parents=True)
    patterns = {}
    for split, table in splits.items():
        table.to_parquet(str(source / f"{split}.parquet"))
        patterns[split] = [str(source / f"{split}.parquet")]
    builder = Parquet(
        data_files=datasets.data_files.DataFilesDict.from_patterns(patterns),
        cache_dir=str(cache_dir / "build"),
        dataset_name=name,
        config_name="default",
        hash="0123456789abcdef",
    )
    builder.download_and_prepare()
    target = cache_dir / f"{namespace}___{name}" / "default"
    target.mkdir(parents=True)
    os.rename(os.path.dirname(builder.cache_dir), target / "0.0.0")


def test_hub_id_loads_from_the_local_cache_offline(tmp_path, offline):
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for _ in range(12)]
    cache = tmp_path / "cache"
    splits = {"train": _image_table(arrays[:9]), "test": _image_table(arrays[9:])}
    _populate_hub_cache(cache, "tiny-org/tiny-images", splits)
    data = load_image_data(dataset_name="tiny-org/tiny-images", cache_dir=str(cache))
    assert (data.channels, data.resolution, data.eval_split, len(data.train), len(data.eval)) == (3, 6, "test", 9, 3)
    np.testing.assert_allclose(data.eval[2].numpy(), _model_range(arrays[11].transpose(2, 0, 1)), atol=1e-6)
    held_out = load_eval_images("tiny-org/tiny-images", cache_dir=str(cache), split="train", num_images=2)
    np.testing.assert_allclose(held_out.tensor()[0].numpy(), _model_range(arrays[0].transpose(2, 0, 1)), atol=1e-6)
    with pytest.raises(ValueError, match=r"dataset_name 'tiny-org/not-cached'.*HF_HUB_OFFLINE"):
        load_image_data(dataset_name="tiny-org/not-cached", cache_dir=str(cache))


def test_local_parquet_dataset_validation_fraction_and_empty_split(tmp_path, offline):
    rng = np.random.default_rng(4)
    arrays = [rng.integers(0, 256, (4, 4), dtype=np.uint8) for _ in range(20)]
    folder = tmp_path / "local"
    folder.mkdir()
    _image_table(arrays).to_parquet(str(folder / "train.parquet"))
    first = load_image_data(dataset_name=str(folder), validation_fraction=0.25, seed=7, cache_dir=str(tmp_path / "c"))
    again = load_image_data(dataset_name=str(folder), validation_fraction=0.25, seed=7, cache_dir=str(tmp_path / "c"))
    assert (first.channels, len(first.train), len(first.eval)) == (1, 15, 5)
    assert first.eval_split == "train[validation_fraction=0.25, seed=7]"
    torch.testing.assert_close(first.eval.tensor(), again.eval.tensor())
    as_bytes = lambda d: {x.numpy().tobytes() for x in d.tensor()}  # noqa: E731
    assert not as_bytes(first.train) & as_bytes(first.eval)
    assert len(as_bytes(first.train) | as_bytes(first.eval)) == 20
    # a test split with no rows
    _image_table(arrays).select([]).to_parquet(str(folder / "test.parquet"))
    with pytest.raises(ValueError, match=r"dataset_name '.*local'.*could not be loaded.*test.*no data"):
        load_image_data(dataset_name=str(folder), cache_dir=str(tmp_path / "c2"))


def test_image_dataset_from_uint8_array_resizes_digits():
    train, _ = digits_split("train")
    dataset = ImageDataset(train[:2], resolution=16, channels=1)
    image = dataset.uint8(0)
    assert image.shape == (1, 16, 16)
    # bilinear upsampling by 2 keeps values within the original range
    assert image.min() >= train[0].min() and image.max() <= train[0].max()


def test_augmentation_does_not_depend_on_dataloader_workers(tmp_path, grey_arrays):
    _write_folder(tmp_path / "train", grey_arrays[:12])
    data = load_image_data(
        train_data_dir=str(tmp_path), resolution=8, random_flip=True, validation_fraction=0.25,
        cache_dir=str(tmp_path / "c"),
    )
    data.train.set_epoch(3)
    batches = {}
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(data.train, batch_size=4, num_workers=workers)
        batches[workers] = torch.cat(list(loader))
    torch.testing.assert_close(batches[0], batches[2], rtol=0, atol=0)
    data.train.set_epoch(4)
    assert not torch.equal(torch.stack([data.train[i] for i in range(len(data.train))]), batches[0])
