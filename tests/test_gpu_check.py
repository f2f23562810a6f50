"""benchmarks/gpu_check.py at tiny sizes on a CPU, as CI runs it: every section runs, the parity checks hold, and the
tables carry a number in every cell (no timings are asserted: those belong to the benchmark's reader)."""

import os
import re
import subprocess
import sys

import pytest

from training_support import REPO

pytestmark = pytest.mark.usefixtures("hub_offline")


def table(output: str, section: str) -> list[list[str]]:
    """The body rows of the markdown table under the heading that starts with ``## (section)``."""
    lines = output.split(f"## ({section})", 1)[1].split("\n## ", 1)[0].splitlines()
    rows = [line for line in lines if line.startswith("| ")][1:]  # without the header row
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def number(cell: str) -> float:
    return float(re.sub(r"[×,]", "", cell))


def test_gpu_check_runs_on_a_cpu_at_tiny_sizes(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_check.py"), "--device", "cpu",
                             "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "all parity and synchronisation checks passed" in out

    parity = table(out, "a")
    assert len(parity) == 5 * 2 + 2  # five scheduler configurations × two chain lengths, two pipelines
    for what, configuration, steps, difference, bound, verdict in parity:
        assert verdict == "ok" and number(difference) <= number(bound), (what, configuration, steps)

    steps = table(out, "b")
    assert {row[0] for row in steps} == {"fp32", "bf16"} and len(steps) == 2 * 2 * 2 * 2
    for row in steps:
        assert all(number(cell) > 0 for cell in row[4:9]), row  # times and ratios
        # One step against diffusers': float32 within the chains' bound of tests/test_scheduler_parity.py (a step is a
        # chain of one; the samples are standard normal, |x| < 8); bfloat16 within four of its ulps below 8 (2⁻⁵ each:
        # the two round their coefficients and intermediate results differently).
        assert number(row[9]) < (1e-3 if row[0] == "fp32" else 4 * 2**-5), row

    training = table(out, "c")
    assert [(row[0], row[1]) for row in training] == [
        (loop, precision) for precision in ("fp32", "bf16")
        for loop in ("`training/train.py`", "the same loop, fed by training/train.py's DataLoader")]
    assert all(number(row[2]) > 0 for row in training)

    sampling = table(out, "d")
    assert [row[0] for row in sampling] == ["diffusers `DDPMPipeline`", "`DDPMDocPipeline`"] * 2
    assert all(number(row[2]) > 0 for row in sampling)

    syncs = table(out, "e")
    assert [row[2] for row in syncs] == ["ok"] * 7 + ["info"]  # run, not checked: set_sync_debug_mode is CUDA's
