"""The README's reference points for sample quality (``hf_ddpm.metrics.reference``), as a Markdown table.

    python benchmarks/metrics_reference.py --num-samples 64 359
    python benchmarks/metrics_reference.py --num-samples 359 --feature-model facebook/dinov2-small
    python benchmarks/metrics_reference.py --num-samples 64 --pipeline out/ --num-inference-steps 1000

Rows: real train digits against the test split (the floor at that N), blurred digits, uniform noise — each the
mean ± standard deviation over disjoint draws — and, with ``--pipeline``, a saved DDPMDocPipeline's samples.
"""

from __future__ import annotations

import argparse
import json

import torch

from hf_ddpm.data import digits_split
from hf_ddpm.metrics import sample_quality
from hf_ddpm.metrics.reference import NUMBERS, reference_points


def pipeline_row(path: str, num_samples: int, steps: int, seed: int, **quality_kwargs) -> dict:
    from hf_ddpm import DDPMDocPipeline

    pipeline = DDPMDocPipeline.from_pretrained(path)
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(batch_size=num_samples, generator=torch.Generator().manual_seed(seed),
                      num_inference_steps=steps, output_type="pt").images
    q = sample_quality(images.clamp(0, 1), digits_split("test")[0], progress=False, **quality_kwargs)
    row = {"name": f"{path} ({steps} steps, seed {seed})", "num_samples": num_samples, "repeats": 1}
    row.update({f"{key}_mean": q[key] for key in NUMBERS} | {f"{key}_std": 0.0 for key in NUMBERS})
    row["class_histogram"] = q["class_histogram"]
    return row


def cell(row, key) -> str:
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    if mean is None:
        return "–"
    return f"{mean:.3f}" if row["repeats"] == 1 else f"{mean:.3f} ± {std:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-samples", type=int, nargs="+", default=[64, 359])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--feature-model", default=None, help="Hub id or folder (default: the digits evaluator)")
    parser.add_argument("--pipeline", action="append", default=[], help="a saved DDPMDocPipeline to add as a row")
    parser.add_argument("--num-inference-steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the rows here")
    opts = parser.parse_args()

    kwargs = {"feature_model": opts.feature_model}
    rows = []
    for n in opts.num_samples:
        rows += reference_points(n, repeats=min(opts.repeats, 1438 // n), seed=opts.seed, **kwargs)
        rows += [pipeline_row(p, n, opts.num_inference_steps, opts.seed, **kwargs) for p in opts.pipeline]
    fd_name = rows[0]["fd_name"] if "fd_name" in rows[0] else "FD"
    print(f"features: {rows[0].get('feature_model')}; reference: the digits' test split (359 images)\n")
    print(f"| images | N | {fd_name} ↓ | IS ↑ | precision ↑ | recall ↑ |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['name']} | {row['num_samples']} | " + " | ".join(cell(row, key) for key in NUMBERS) + " |")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
