"""Sharing a busy machine (hf_ddpm.contention): OpenMP's bounded spin set before torch loads, the thread count from
the load at start with the advice that names --num_threads, and the logic of benchmarks/bench_contention.py."""

import os
import subprocess
import sys

import pytest

from hf_ddpm.contention import SPIN_COUNT, mode
from hf_ddpm.training.machine import chosen_for_busy_machine, cpu_threads, usable_cores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTENTION_PY = os.path.join(REPO, "hf_ddpm", "contention.py")
BASE = {k: v for k, v in os.environ.items()
        if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "HF_DDPM_CONTENTION", "OMP_NUM_THREADS")}


def _spin_count_seen(env: dict, import_torch_first: bool = False) -> str:
    """GOMP_SPINCOUNT after bound_spinning in a fresh interpreter (the module loaded by path: no torch with it)."""
    script = ("import importlib.util, os, sys\n"
              + ("import torch\n" if import_torch_first else "")
              + f"spec = importlib.util.spec_from_file_location('contention', {CONTENTION_PY!r})\n"
              "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
              "module.bound_spinning()\nprint(os.environ.get('GOMP_SPINCOUNT'))\n")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


ON = {**BASE, "HF_DDPM_CONTENTION": "on"}  # both measures (the default is the spin alone)


def test_the_spin_count_is_bounded_before_torch_starts_unless_someone_chose():
    assert _spin_count_seen(BASE) == str(SPIN_COUNT)  # the spin measure is on by default
    assert _spin_count_seen(ON) == str(SPIN_COUNT)
    assert _spin_count_seen({**BASE, "HF_DDPM_CONTENTION": "threads"}) == "None"
    assert _spin_count_seen({**BASE, "HF_DDPM_CONTENTION": "off"}) == "None"
    assert _spin_count_seen({**ON, "GOMP_SPINCOUNT": "5"}) == "5"
    assert _spin_count_seen({**ON, "OMP_WAIT_POLICY": "PASSIVE"}) == "None"
    assert _spin_count_seen(ON, import_torch_first=True) == "None"  # too late: libgomp has read its variables


def test_importing_hf_ddpm_bounds_the_spin():
    script = "import os, hf_ddpm, torch; print(os.environ.get('GOMP_SPINCOUNT'))"
    result = subprocess.run([sys.executable, "-c", script], env=ON, capture_output=True, text=True, timeout=300)
    assert result.stdout.strip().splitlines()[-1] == str(SPIN_COUNT), result.stderr[-2000:]


def test_the_threads_leave_the_cores_the_load_shows_busy():
    cores = usable_cores()
    on = {"HF_DDPM_CONTENTION": "on"}
    assert cpu_threads(environ={}, load=float(cores)).threads == cores  # the threads measure is opt-in
    idle = cpu_threads(environ=on, load=0.3)
    assert idle.threads == cores and not chosen_for_busy_machine(idle)
    busy = cpu_threads(environ=on, load=float(cores))  # every core busy: one thread is kept
    assert busy.threads == 1
    assert chosen_for_busy_machine(busy) == (cores > 1) and (cores == 1 or "--num_threads" in busy.reason)
    two_processes = cpu_threads(environ={"LOCAL_WORLD_SIZE": "2"}, load=0.0)
    assert two_processes.threads == max(1, cores // 2)
    assert cpu_threads(environ={"HF_DDPM_CONTENTION": "off"}, load=float(cores)).threads == cores
    assert cpu_threads(environ={"HF_DDPM_CONTENTION": "spin"}, load=float(cores)).threads == cores
    assert cpu_threads(3, environ=on, load=float(cores)).threads == 3  # --num_threads wins
    with pytest.raises(ValueError, match="HF_DDPM_CONTENTION must be one of"):
        mode({"HF_DDPM_CONTENTION": "sometimes"})


def test_the_contention_benchmark_runs_each_scenario_in_each_mode(capsys):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import bench_contention
    finally:
        sys.path.pop(0)
    env = bench_contention.run_env("spin", 1000)
    assert env["HF_DDPM_CONTENTION"] == "spin" and env["GOMP_SPINCOUNT"] == "1000" and "OMP_NUM_THREADS" not in env
    assert bench_contention.slowdown(20.0, 4.0) == 5.0
    bench_contention.main(["--dry-run", "--modes", "off,on", "--spin-counts", "1000", "--steps", "7"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == 3 * 6  # per variant: alone, a pair, evaluate alone, training + evaluate
    assert sum("training/train.py" in line and "--max_train_steps 7" in line for line in lines) == 3 * 4
    assert sum("-m hf_ddpm evaluate" in line for line in lines) == 3 * 2
    assert sum("GOMP_SPINCOUNT=1000" in line for line in lines) == 6
    rows = [dict(mode="off", scenario="alone", load=0.1, value=19.7, unit="step/s", slowdown=1.0)]
    assert "| off | alone | 0.10 | 19.70 step/s | 1.00 |" in bench_contention.table(rows)
