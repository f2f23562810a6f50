"""Sharing a busy machine (hf_ddpm.contention): the thread count that follows the machine (ThreadGovernor, with
readings given by hand and real ones beside a busy process, in the hf-ddpm command), OpenMP's bounded spin set before
torch loads, and the logic of benchmarks/bench_contention.py."""

import os
import subprocess
import sys
import time

import pytest

import torch

from hf_ddpm.contention import DEFAULT_MODE, SPIN_COUNT, ThreadGovernor, follow_the_machine, mode
from hf_ddpm.training.machine import ThreadChoice, cpu_threads, usable_cores
from helpers import tiny_unet

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


ON = {**BASE, "HF_DDPM_CONTENTION": "on"}  # both measures


def test_the_spin_count_is_bounded_before_torch_starts_unless_someone_chose():
    assert _spin_count_seen(BASE) == (str(SPIN_COUNT) if DEFAULT_MODE in ("on", "spin") else "None")
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


def test_the_thread_count_is_the_cores_unless_somebody_chose():
    cores = usable_cores()
    alone = cpu_threads(environ={})
    assert alone.threads == cores and not alone.chosen
    assert cpu_threads(environ={"LOCAL_WORLD_SIZE": "2"}).threads == max(1, cores // 2)
    assert cpu_threads(3, environ={}) == (3, "num_threads") and cpu_threads(3, environ={}).chosen
    assert cpu_threads(environ={"OMP_NUM_THREADS": "3"}).chosen  # started directly: whoever set it meant it
    with pytest.raises(ValueError, match="HF_DDPM_CONTENTION must be one of"):
        mode({"HF_DDPM_CONTENTION": "sometimes"})


@pytest.fixture
def torch_threads():
    """The test process's intra-op thread count, restored after the test."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


class Machine:
    """Readings for a ThreadGovernor: a clock, the cores' work and this process's own CPU time, advanced by hand."""

    def __init__(self):
        self.now = self.work = self.own = 0.0

    def run(self, seconds: float, others: float, own: float):
        """``seconds`` pass; other processes keep ``others`` cores busy, this one ``own``."""
        self.now += seconds
        self.work += seconds * (others + own)
        self.own += seconds * own


def governor_on(machine: Machine, threads: int, cores: int, lines: list) -> ThreadGovernor:
    return ThreadGovernor(threads, cores=set(range(cores)), interval=1.0, busy=lambda _: machine.work,
                          own=lambda: machine.own, clock=lambda: machine.now, report=lines.append)


def test_the_governor_gives_back_the_cores_others_use_and_takes_them_again(torch_threads):
    machine, lines = Machine(), []
    torch.set_num_threads(2)
    governor = governor_on(machine, threads=2, cores=2, lines=lines)
    machine.run(0.5, others=1.0, own=2.0)
    governor()
    assert torch.get_num_threads() == 2  # less than an interval since its last look: no look
    machine.run(0.75, others=1.0, own=1.0)  # another process took a core (our spinning counts as our own)
    governor()
    assert torch.get_num_threads() == 1 and governor.threads == 1
    assert len(lines) == 1 and "instead of 2" in lines[0] and "OMP_NUM_THREADS" in lines[0] \
        and "--num_threads" in lines[0]
    machine.run(1.0, others=0.9, own=1.0)
    governor()
    assert torch.get_num_threads() == 1  # the other process still works
    machine.run(1.0, others=0.05, own=1.0)  # it ended (a little background work stays)
    governor()
    assert torch.get_num_threads() == 2
    machine.run(1.0, others=1.2, own=1.0)
    governor()
    assert torch.get_num_threads() == 1 and len(lines) == 1  # said once


def test_the_governor_keeps_between_one_thread_and_the_count_it_started_with(torch_threads):
    machine, lines = Machine(), []
    torch.set_num_threads(2)
    governor = governor_on(machine, threads=2, cores=4, lines=lines)  # e.g. one of two processes on 4 cores
    machine.run(1.0, others=2.0, own=2.0)  # the other process's two cores: ours are still free
    governor()
    assert torch.get_num_threads() == 2 and not lines
    machine.run(1.0, others=3.6, own=0.4)  # every other core busy: one thread is kept
    governor()
    assert torch.get_num_threads() == 1
    machine.run(1.0, others=0.0, own=1.0)
    governor()
    assert torch.get_num_threads() == 2  # never more than it started with


def test_the_governor_keeps_its_threads_while_it_gets_its_cores(torch_threads):
    """One of two processes of a launch on 4 cores, each on its 2: the other process and a little outside work keep
    2.6 cores busy, but this one still gets its 2 — nothing to give back (giving back would make every process of the
    launch swing between 1 and 2 threads)."""
    machine, lines = Machine(), []
    torch.set_num_threads(2)
    governor = governor_on(machine, threads=2, cores=4, lines=lines)
    machine.run(1.0, others=2.6, own=1.9)
    governor()
    assert torch.get_num_threads() == 2 and not lines
    machine.run(1.0, others=2.6, own=1.2)  # now it is starved: it gives a thread back
    governor()
    assert torch.get_num_threads() == 1 and len(lines) == 1


def test_the_governor_leaves_a_count_other_code_set(torch_threads):
    machine, lines = Machine(), []
    torch.set_num_threads(2)
    governor = governor_on(machine, threads=2, cores=2, lines=lines)
    torch.set_num_threads(1)  # e.g. a metric network that runs on one thread, and restores the count after
    machine.run(1.0, others=0.0, own=1.0)
    governor()
    assert torch.get_num_threads() == 1 and governor.threads == 2


BUSY_LOOP = "import time\nend = time.time() + 60\nwhile time.time() < end:\n    pass\n"


@pytest.mark.skipif(usable_cores() < 2, reason="one core: no thread to give back")
def test_the_governor_reads_the_work_of_another_process_on_this_machine(torch_threads):
    """Real readings (/proc/stat, this process's CPU time): a busy loop in another process takes a thread away."""
    cores = usable_cores()
    torch.set_num_threads(cores)
    governor = ThreadGovernor(cores, interval=0.5, report=lambda line: None)
    loop = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        time.sleep(1.0)
        governor.last = governor.reading()  # from here the loop runs all the time
        time.sleep(1.0)
        governor()
    finally:
        loop.kill()
        loop.wait()
    assert governor.threads <= cores - 1 and torch.get_num_threads() == governor.threads


def test_follow_the_machine_hooks_every_network_call_only_for_a_count_nobody_chose(torch_threads):
    network = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU())
    free = ThreadChoice(2, "the 2 usable core(s) / 1 local process(es)")
    for choice, environ in ((None, {}), (ThreadChoice(2, "OMP_NUM_THREADS"), {}), (ThreadChoice(2, "num_threads"), {}),
                            (ThreadChoice(1, "the 1 usable core(s) / 1 local process(es)"), {}),
                            (free, {"HF_DDPM_CONTENTION": "off"}), (free, {"HF_DDPM_CONTENTION": "spin"})):
        with follow_the_machine(choice, environ) as governor:
            assert governor is None
    torch.set_num_threads(2)
    with follow_the_machine(free, {}) as governor:
        assert isinstance(governor, ThreadGovernor) and governor.most == 2
        governor.interval = 0.0
        looked = governor.last
        network(torch.zeros(1, 3))
        assert governor.last is not looked  # a module's call looked at the machine
        governor.threads = 1
        torch.set_num_threads(1)  # as if others had kept a core busy
    assert torch.get_num_threads() == 2  # restored on the way out
    looked = governor.last
    network(torch.zeros(1, 3))
    assert governor.last is looked  # the hook is gone


@pytest.mark.skipif(usable_cores() < 2, reason="one core: no thread to give back")
def test_the_command_gives_a_thread_to_another_process(tmp_path):
    """``hf-ddpm sample`` beside a busy loop: the command's own threads follow the machine and say so once."""
    from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler

    DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=1000)).save_pretrained(tmp_path / "m")
    loop = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        result = subprocess.run([sys.executable, "-m", "hf_ddpm", "sample", "--model", str(tmp_path / "m"),
                                 "--num-images", "16", "--steps", "1000", "--out", str(tmp_path / "grid.png")],
                                env={**BASE, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    finally:
        loop.kill()
        loop.wait()
    assert result.returncode == 0, result.stderr[-2000:]
    said = [line for line in result.stderr.splitlines() if line.startswith("hf-ddpm: other processes keep")]
    assert len(said) == 1 and f"instead of {usable_cores()}" in said[0], result.stderr[-2000:]


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
    # per variant: alone, a pair, evaluate alone, training + evaluate, sample alone, training + sample
    assert len(lines) == 3 * 9
    assert sum("training/train.py" in line and "--max_train_steps 7" in line for line in lines) == 3 * 5
    assert sum("-m hf_ddpm evaluate" in line for line in lines) == 3 * 2
    assert sum("-m hf_ddpm sample" in line and "--num-images 256 --steps 200" in line for line in lines) == 3 * 2
    assert sum("GOMP_SPINCOUNT=1000" in line for line in lines) == 9
    rows = [dict(mode="off", scenario="alone", load=0.1, value=19.7, unit="step/s", slowdown=1.0, fewer=False),
            dict(mode="threads", scenario="pair (a)", load=1.0, value=9.0, unit="step/s", slowdown=2.19, fewer=True)]
    table = bench_contention.table(rows).splitlines()
    assert table[2:] == ["| off | alone | 0.10 | 19.70 step/s | 1.00 | no |",
                         "| threads | pair (a) | 1.00 | 9.00 step/s | 2.19 | yes |"]
