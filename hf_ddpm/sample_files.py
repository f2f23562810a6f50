"""Samples as files: numbered PNGs or ``.npz`` shards, written by any number of processes, atomically, resumable.

``hf-ddpm sample --out-dir DIR`` (and ``accelerate launch -m hf_ddpm sample …``) calls :func:`write_samples`. The
N images are cut into shards of ``shard_size`` consecutive indices; shard k belongs to process k mod P. Image i is
drawn by ancestral sampling with its own generator, seeded by (seed, i) (:mod:`hf_ddpm.image_seeds`), so the set of
images is the same for any number of processes and any batch size, on the same kernels; a class-conditional model's
label of image i is the i-th of the given labels, cycled, or drawn from that generator.

The folder holds ``samples.json`` (the :class:`SampleSpec`: everything that decides the images) and
- format ``png``: ``000000.png`` … (one per image, 8-bit, the model's channels) and, per finished shard,
  ``shards/shard_000000.json`` (its indices and labels), written after its PNGs;
- format ``npz``: ``shards/shard_000000.npz`` (``arr_0``: uint8 NHWC, ``arr_1``: labels of a conditional model), merged
  when all are there into ``samples_{N}x{H}x{W}x{C}.npz`` with the same arrays, the layout openai's evaluation suite
  reads; the shards are then removed.
Every file is written to a hidden temporary name and renamed (:func:`atomic_write`), so a killed run leaves finished
shards whole; started again with the same settings it draws only the missing shards: nothing written is lost or
drawn twice. Other settings in a folder that holds samples are refused.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .atomic_files import atomic_write
from .errors import ParameterError
from .image_seeds import SAMPLING, image_generators
from .images import to_uint8

FORMATS = ("png", "npz")
SPEC_FILE = "samples.json"
SHARDS = "shards"
DEFAULT_SHARD_SIZE = 1000


@dataclass(frozen=True)
class SampleSpec:
    """What decides a folder's images (saved as ``samples.json``): the model, how many, the seed, the sampler (its
    scheduler's configuration, the number of steps and any further pipeline arguments), the labels and guidance
    scale of a conditional model (``class_labels``: label ids given to images 0, 1, … cycled; None: drawn per image),
    and the files' ``format`` and ``shard_size``."""

    model: str
    num_images: int
    seed: int
    num_inference_steps: int
    scheduler: dict
    class_labels: list | None = None
    guidance_scale: float = 1.0
    sampler_kwargs: dict | None = None
    format: str = "png"
    shard_size: int = DEFAULT_SHARD_SIZE

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ParameterError("format", f"must be one of {FORMATS}, got {self.format!r}")
        for name in ("num_images", "shard_size", "num_inference_steps"):
            if getattr(self, name) < 1:
                raise ParameterError(name, f"must be ≥ 1, got {getattr(self, name)}")

    @property
    def num_shards(self) -> int:
        return -(-self.num_images // self.shard_size)

    def shard(self, k: int) -> range:
        """The image indices of shard ``k``."""
        return range(k * self.shard_size, min((k + 1) * self.shard_size, self.num_images))

    def labels_of(self, indices) -> torch.Tensor | None:
        """The given label ids of images ``indices`` (cycled), or None when labels are drawn."""
        if self.class_labels is None:
            return None
        return torch.tensor([self.class_labels[i % len(self.class_labels)] for i in indices], dtype=torch.long)

    @property
    def digits(self) -> int:
        """Width of the zero-padded image numbers (at least 6)."""
        return max(6, len(str(self.num_images - 1)))


def scheduler_record(scheduler) -> dict:
    """A scheduler's class and configuration as JSON-safe data (without the diffusers version)."""
    record = json.loads(scheduler.to_json_string())
    record.pop("_diffusers_version", None)
    return record


@torch.no_grad()
def draw_images(pipeline, indices, spec: SampleSpec, *, batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Images ``indices`` of ``spec`` drawn with ``pipeline``, ``batch_size`` per call: (uint8 ``[n, H, W, C]``,
    label ids ``[n]`` or None for an unconditional model). Each image's generator is seeded by (seed, index)."""
    indices = list(indices)
    images, labels = [], []
    for start in range(0, len(indices), batch_size):
        batch = indices[start : start + batch_size]
        output = pipeline(batch_size=len(batch), generator=image_generators(spec.seed, batch, SAMPLING),
                          num_inference_steps=spec.num_inference_steps, output_type="np",
                          class_labels=spec.labels_of(batch), guidance_scale=spec.guidance_scale,
                          **(spec.sampler_kwargs or {}))
        images.append(to_uint8(output.images))
        if output.class_labels is not None:
            labels.append(torch.as_tensor(output.class_labels).cpu().numpy())
    return np.concatenate(images), (np.concatenate(labels) if labels else None)


class SampleFolder:
    """The files of one :class:`SampleSpec` in ``out_dir``: which shards are done, and writing them."""

    def __init__(self, out_dir: str, spec: SampleSpec):
        self.out_dir = out_dir
        self.spec = spec

    @property
    def merged_path(self) -> str:
        """The npz of all images, named as openai's samplers name theirs (``samples_{N}x{H}x{W}x{C}.npz``); its
        shape is only known once images exist, so it is found by pattern."""
        found = glob.glob(os.path.join(self.out_dir, f"samples_{self.spec.num_images}x*.npz"))
        return found[0] if found else ""

    def shard_path(self, k: int) -> str:
        extension = "npz" if self.spec.format == "npz" else "json"
        return os.path.join(self.out_dir, SHARDS, f"shard_{k:06d}.{extension}")

    def image_path(self, index: int) -> str:
        return os.path.join(self.out_dir, f"{index:0{self.spec.digits}d}.png")

    def is_done(self, k: int) -> bool:
        return bool(self.merged_path) or os.path.exists(self.shard_path(k))

    def missing_shards(self, process_index: int = 0, num_processes: int = 1) -> list[int]:
        """The shards of process ``process_index`` (k mod P) that are not written yet, in order."""
        return [k for k in range(process_index, self.spec.num_shards, num_processes) if not self.is_done(k)]

    def prepare(self, is_main: bool) -> None:
        """Create the folder and record the spec; refuse a folder that holds samples of other settings."""
        path = os.path.join(self.out_dir, SPEC_FILE)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                recorded = json.load(handle)
            mine = json.loads(json.dumps(asdict(self.spec)))
            if recorded != mine:
                changed = sorted(key for key in set(recorded) | set(mine) if recorded.get(key) != mine.get(key))
                raise ParameterError("out_dir", f"{self.out_dir!r} holds samples of other settings "
                                                f"({', '.join(changed)} differ): resume with the same settings, or "
                                                "choose a new folder")
        elif os.path.isdir(self.out_dir) and glob.glob(os.path.join(self.out_dir, "*.png")):
            raise ParameterError("out_dir", f"{self.out_dir!r} already holds PNG files that hf-ddpm did not record "
                                            f"in a {SPEC_FILE}: choose an empty or new folder")
        os.makedirs(os.path.join(self.out_dir, SHARDS), exist_ok=True)
        if is_main and not os.path.exists(path):
            text = json.dumps(asdict(self.spec), indent=2).encode()
            atomic_write(path, lambda handle: handle.write(text))

    def write_shard(self, k: int, images: np.ndarray, labels: np.ndarray | None) -> None:
        """Write shard ``k`` (its images and labels), atomically; for PNGs the shard's record comes last."""
        indices = list(self.spec.shard(k))
        if self.spec.format == "npz":
            arrays = {"arr_0": images} if labels is None else {"arr_0": images, "arr_1": labels}
            atomic_write(self.shard_path(k), lambda handle: np.savez(handle, **arrays))
            return
        from PIL import Image

        for index, image in zip(indices, images):
            picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
            atomic_write(self.image_path(index), lambda handle: picture.save(handle, format="PNG"))
        record = {"indices": [indices[0], indices[-1] + 1], "class_labels": None if labels is None else labels.tolist()}
        atomic_write(self.shard_path(k), lambda handle: handle.write(json.dumps(record).encode()))

    def finish(self) -> str:
        """Once every shard is written: for npz, merge the shards into one file and remove them; remove leftover
        temporary files. Returns where the samples are."""
        if self.spec.format == "npz" and not self.merged_path:
            shards = [np.load(self.shard_path(k)) for k in range(self.spec.num_shards)]
            arrays = {"arr_0": np.concatenate([shard["arr_0"] for shard in shards])}
            if "arr_1" in shards[0]:
                arrays["arr_1"] = np.concatenate([shard["arr_1"] for shard in shards])
            shape = "x".join(str(size) for size in arrays["arr_0"].shape)
            atomic_write(os.path.join(self.out_dir, f"samples_{shape}.npz"), lambda handle: np.savez(handle, **arrays))
            for k in range(self.spec.num_shards):
                os.remove(self.shard_path(k))
        for leftover in glob.glob(os.path.join(self.out_dir, ".*.tmp")) + \
                glob.glob(os.path.join(self.out_dir, SHARDS, ".*.tmp")):
            os.remove(leftover)
        return self.merged_path or self.out_dir


def write_samples(pipeline, out_dir: str, spec: SampleSpec, *, batch_size: int = 64, state=None,
                  progress: bool = True) -> str:
    """Draw the images of ``spec`` that ``out_dir`` does not hold yet and write them (see the module docstring).

    ``state``: an ``accelerate.PartialState`` (None: one process); this process draws the missing shards k with
    k mod P = its index, the main process shows a progress bar (images/s, time left). Returns where the samples are
    (the folder, or the merged npz) once all processes are done."""
    process_index, num_processes = (0, 1) if state is None else (state.process_index, state.num_processes)
    is_main = process_index == 0
    folder = SampleFolder(out_dir, spec)
    folder.prepare(is_main)
    todo = folder.missing_shards(process_index, num_processes)
    from tqdm.auto import tqdm

    from .progress import bar_options

    total = sum(len(spec.shard(k)) for k in todo)
    desc = f"sampling (this process's share of {num_processes})" if num_processes > 1 else "sampling"
    with tqdm(total=total, unit="img", **bar_options(desc, enabled=progress and is_main)) as bar:
        for k in todo:
            images, labels = draw_images(pipeline, spec.shard(k), spec, batch_size=batch_size)
            folder.write_shard(k, images, labels)
            bar.update(len(images))
    if state is not None:
        state.wait_for_everyone()
    where = folder.finish() if is_main else out_dir
    if state is not None:
        state.wait_for_everyone()
    return folder.merged_path or where


class SampleSource:
    """Saved samples to score (``hf-ddpm evaluate --samples``): their count, their images read by index range, their
    labels (None when unknown), and where they came from."""

    def __init__(self, description: str, num_images: int, read, labels: np.ndarray | None = None):
        self.description = description
        self.num_images = num_images
        self._read = read
        self.labels = labels

    def read(self, start: int, stop: int) -> np.ndarray:
        """uint8 ``[stop − start, H, W, C]``: images start … stop − 1."""
        return self._read(start, stop)


def _checked_npz(path: str, parameter: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``arr_0`` (uint8 NHWC, C = 1 or 3) and ``arr_1`` (labels, if any) of an npz file, or one clear error."""
    import zipfile

    try:
        with np.load(path) as data:
            if "arr_0" not in data:
                raise ParameterError(parameter, f"{path!r} has no arr_0 (it holds {sorted(data.files)}); expected "
                                                "the images as arr_0, uint8 (N, H, W, C)")
            images, labels = data["arr_0"], (data["arr_1"] if "arr_1" in data else None)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        if isinstance(error, ParameterError):
            raise
        raise ParameterError(parameter, f"{path!r} is not a readable .npz file ({error})") from error
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images):
        raise ParameterError(parameter, f"{path!r}: arr_0 is {images.dtype} of shape {images.shape}; expected uint8 "
                                        "images (N, H, W, C) with N ≥ 1 and C = 1 or 3 (channels last)")
    return images, labels


def _read_pngs(paths: list[str], parameter: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    arrays = []
    for path in paths:
        try:
            with Image.open(path) as picture:
                picture.load()
                array = np.asarray(picture if picture.mode in ("L", "RGB") else picture.convert("RGB"))
        except (OSError, UnidentifiedImageError) as error:
            raise ParameterError(parameter, f"{path!r} could not be read as an image ({error})") from error
        arrays.append(array[..., None] if array.ndim == 2 else array)
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        raise ParameterError(parameter, f"the images differ in size or channels: {sorted(shapes)[:4]}")
    return np.stack(arrays)


def open_samples(path: str, parameter: str = "samples") -> SampleSource:
    """The samples at ``path``: an ``.npz`` (``arr_0`` uint8 NHWC, as openai's samplers and ``--format npz`` write),
    a folder written by :func:`write_samples` (complete), or any folder of PNG images (in sorted name order)."""
    if os.path.isfile(path):
        images, labels = _checked_npz(path, parameter)
        return SampleSource(path, len(images), lambda start, stop: images[start:stop], labels)
    if not os.path.isdir(path):
        raise ParameterError(parameter, f"{path!r} is neither an .npz file nor a folder")
    spec_path = os.path.join(path, SPEC_FILE)
    if os.path.exists(spec_path):
        with open(spec_path, encoding="utf-8") as handle:
            spec = SampleSpec(**json.load(handle))
        folder = SampleFolder(path, spec)
        if spec.format == "npz" and folder.merged_path:
            return open_samples(folder.merged_path, parameter)
        missing = folder.missing_shards()
        if missing:
            raise ParameterError(parameter, f"{path!r} is incomplete: {len(missing)} of {spec.num_shards} shards are "
                                            "missing; run the same hf-ddpm sample command again to finish it")
        if spec.format == "npz":  # complete but not merged yet (stopped between the last shard and the merge)
            shards = [_checked_npz(folder.shard_path(k), parameter) for k in range(spec.num_shards)]
            images = np.concatenate([shard[0] for shard in shards])
            labels = None if shards[0][1] is None else np.concatenate([shard[1] for shard in shards])
            return SampleSource(path, len(images), lambda start, stop: images[start:stop], labels)
        records = []
        for k in range(spec.num_shards):
            with open(folder.shard_path(k), encoding="utf-8") as handle:
                records.append(json.load(handle)["class_labels"])
        labels = None if records[0] is None else np.concatenate(records)
        paths = [folder.image_path(i) for i in range(spec.num_images)]
    else:
        paths = sorted(glob.glob(os.path.join(path, "*.png")))
        labels = None
        if not paths:
            raise ParameterError(parameter, f"{path!r} holds no .png images (and no {SPEC_FILE} of hf-ddpm sample)")
    _read_pngs(paths[:1], parameter)  # an unreadable folder fails here, before any work
    return SampleSource(path, len(paths), lambda start, stop: _read_pngs(paths[start:stop], parameter), labels)
