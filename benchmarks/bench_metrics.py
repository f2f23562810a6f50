"""Cost of the sample-quality metrics on this machine, and why FD is not torchmetrics' or scipy's route.

    python benchmarks/bench_metrics.py                 # all sections, torch threads as set by OMP_NUM_THREADS
    python benchmarks/bench_metrics.py --fd-n 10000 --fd-d 768 --dino-images 64

1. Feature extraction throughput (images/s, preprocessing included) on 8 × 8 grey digits for the built-in digits
   evaluator and for a DINOv2-small-sized model (384 wide, 12 layers, 6 heads, patch 14: 22M parameters, 224 × 224
   input after BitImageProcessor's resize/crop; random weights cost the same as real ones), median of ``--rounds``.
2. FD on N × D features: wall time of ``hf_ddpm.metrics.frechet_distance`` against torchmetrics'
   ``FrechetInceptionDistance`` fed the same features (an identity feature network; skipped if torchmetrics is
   not installed) and the scipy ``sqrtm(Σ₁Σ₂)`` textbook route; then their error where the answer is known in
   closed form: b = s·a + c, for which FD = ‖(1 − s)μ_a − c‖² + (1 − s)² tr Σ_a, at N < D (rank-deficient)
   and N > D, and FD(a, a) = 0.
3. Precision/recall (k = 3) cost on N × D features.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import scipy.linalg
import torch


def timed(fn, rounds: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def scipy_fd(a, b) -> float:
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1) + np.trace(s2)
                 - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)


def torchmetrics_fd():
    """torchmetrics' FrechetInceptionDistance on given features, or None when torchmetrics is not installed."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        return None

    class Identity(torch.nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.num_features = dim

        def forward(self, x):
            return x

    def fd(a, b):
        metric = FrechetInceptionDistance(feature=Identity(a.shape[1]))
        metric.update(torch.from_numpy(a), real=True)
        metric.update(torch.from_numpy(b), real=False)
        return float(metric.compute())

    return fd


def bench_extraction(opts) -> None:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    from hf_ddpm.data import digits_split
    from hf_ddpm.metrics import classifier_outputs, image_features, load_digits_evaluator, load_image_model
    from hf_ddpm.metrics.images import as_image_batch

    train, _ = digits_split("train")
    digits = as_image_batch(train[: opts.digits_images], "digits")
    evaluator, record = load_digits_evaluator()
    params = sum(p.numel() for p in evaluator.model.parameters())
    seconds, _ = timed(lambda: classifier_outputs(digits, evaluator, batch_size=256, progress=False), opts.rounds)
    print(f"| digits evaluator (ViT, {params / 1e3:.0f}k params, 8×8 grey) | {len(digits)} | "
          f"{len(digits) / seconds:,.0f} |")

    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        Dinov2Model(Dinov2Config(hidden_size=384, num_attention_heads=6)).save_pretrained(folder)  # dinov2-small
        BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                          image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
        dino = load_image_model(folder, task="features", role="feature_model")
        params = sum(p.numel() for p in dino.model.parameters())
        images = digits[: opts.dino_images]
        seconds, _ = timed(lambda: image_features(images, dino, batch_size=32, progress=False), opts.rounds)
        print(f"| DINOv2-small-sized (from config, {params / 1e6:.1f}M params, 224×224) | {len(images)} | "
              f"{len(images) / seconds:,.1f} |")


def bench_frechet(opts) -> None:
    from hf_ddpm.metrics import frechet_distance

    routes = {"hf_ddpm frechet_distance": frechet_distance, "scipy sqrtm(Σ₁Σ₂)": scipy_fd}
    if (tm := torchmetrics_fd()) is not None:
        routes["torchmetrics FrechetInceptionDistance"] = tm
    rng = np.random.default_rng(0)
    n, d = opts.fd_n, opts.fd_d
    a = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d)
    b = 1.1 * rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d) + 0.1
    print(f"\nFD on {n:,} × {d} float64 features (median of {opts.rounds}):\n")
    print("| route | seconds |\n| --- | ---: |")
    for name, fn in routes.items():
        seconds, _ = timed(lambda: fn(a, b), opts.rounds)
        print(f"| {name} | {seconds:.2f} |")

    print(f"\nFD error against the closed form (b = 1.7·a + c, D = {d}):\n")
    print("| route | N | relative error | FD(a, a) |\n| --- | ---: | ---: | ---: |")
    for size in (100, 4 * d):
        a = rng.standard_normal((size, d)) * rng.uniform(0.5, 2.0, d) + 3.0
        c = rng.standard_normal(d)
        exact = np.sum((-0.7 * a.mean(0) - c) ** 2) + 0.49 * np.trace(np.cov(a, rowvar=False))
        for name, fn in routes.items():
            error = (fn(a, 1.7 * a + c) - exact) / exact
            print(f"| {name} | {size} | {error:.1e} | {fn(a, a):.1e} |")


def bench_precision_recall(opts) -> None:
    from hf_ddpm.metrics import precision_recall

    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((opts.pr_n, opts.fd_d)), rng.standard_normal((opts.pr_n, opts.fd_d)) + 0.05
    seconds, _ = timed(lambda: precision_recall(a, b, k=3), 1)
    print(f"\nprecision/recall (k = 3) on 2 × {opts.pr_n:,} × {opts.fd_d} features: {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--digits-images", type=int, default=1438, help="train digits pushed through the evaluator")
    parser.add_argument("--dino-images", type=int, default=64)
    parser.add_argument("--fd-n", type=int, default=10_000)
    parser.add_argument("--fd-d", type=int, default=768)
    parser.add_argument("--pr-n", type=int, default=5_000)
    parser.add_argument("--sections", default="extraction,frechet,precision_recall")
    opts = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    sections = opts.sections.split(",")
    if "extraction" in sections:
        print("| feature network | images | images/s |\n| --- | ---: | ---: |")
        bench_extraction(opts)
    if "frechet" in sections:
        bench_frechet(opts)
    if "precision_recall" in sections:
        bench_precision_recall(opts)


if __name__ == "__main__":
    main()
