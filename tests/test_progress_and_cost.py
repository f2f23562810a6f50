"""Long work shows its progress and says its cost first (``hf_ddpm.progress``, ``hf_ddpm.cost``,
``hf_ddpm.training.estimate``): bars whose totals are the work the phases do, counted independently at the network;
bounded log lines off a terminal; the trainer's estimate before its first step, with its advice — on tiny models and
a replaced clock, never by timing anything."""

import io
import re
import sys

import pytest
import torch
from helpers import tiny_conditional_pipeline, tiny_unet
from tqdm.auto import tqdm
from training_support import tiny_settings

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler, cost, progress
from hf_ddpm.cost import NetworkCost, figure_phases
from hf_ddpm.figures import write_figures
from hf_ddpm.progress import LOG_SECONDS, NetworkProgress, bar_options
from hf_ddpm.training import estimate
from hf_ddpm.training.config import RunConfig
from hf_ddpm.training.trainer import Trainer

T = 20


class FakeClock:
    """A clock that moves only when told (``now``), or by ``step`` at every read."""

    def __init__(self, step: float = 0.0):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def count_images(network: torch.nn.Module, counts: list):
    """An independent count: append each call's batch size to ``counts``."""
    return network.register_forward_pre_hook(lambda module, args: counts.append(args[0].shape[0]))


@pytest.mark.parametrize("another_bar_open", [False, True])
def test_off_a_terminal_a_1000_step_bar_writes_a_bounded_number_of_lines(monkeypatch, another_bar_open):
    """A bar refreshed at every one of 1000 steps (set_postfix forces it, as the trainer's does) over 1000 s writes
    its first line, at most one per LOG_SECONDS, and its last, which holds the final count and postfix — also when
    another bar is open (tqdm then draws this one below it with cursor moves, which are not lines)."""
    clock = FakeClock()
    monkeypatch.setattr(progress, "clock", clock)
    other = tqdm(total=5, file=io.StringIO()) if another_bar_open else None
    log = io.StringIO()
    bar = tqdm(total=1000, **bar_options("sampling", unit="step", stream=log))
    for step in range(1000):
        clock.now = float(step + 1)
        bar.update(1)
        bar.set_postfix(loss=step)
    bar.close()
    if other is not None:
        other.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    assert lines[0].startswith("sampling: 0/1000 steps (0%)")
    assert lines[-1].startswith("sampling: 1000/1000 steps (100%)") and lines[-1].endswith("loss=999")
    assert 1000 / LOG_SECONDS - 1 <= len(lines) <= 1000 / LOG_SECONDS + 2
    assert all(0 <= int(re.match(r"sampling: (\d+)/", line).group(1)) <= 1000 for line in lines)


def test_a_fast_phase_writes_two_lines_and_a_terminal_gets_a_bar():
    log, terminal = io.StringIO(), Terminal()
    for stream in (log, terminal):
        bar = tqdm(total=1000, **bar_options("chain", unit="step", stream=stream))
        for _ in range(1000):
            bar.update(1)
        bar.close()
    assert len(log.getvalue().splitlines()) == 2
    assert "\r" in terminal.getvalue() and "1000/1000" in terminal.getvalue()  # tqdm's own bar, refreshed in place
    hidden = tqdm(total=10, **bar_options("other process", enabled=False, stream=log))
    hidden.update(10)
    hidden.close()
    assert "other process" not in log.getvalue()


def figures_by_phase(pipe, images, tmp_path, monkeypatch, phases, **options):
    """write_figures under one NetworkProgress started with ``phases``; (the images counted by an independent hook
    when each figure's file is written, all of them, the calls, the bars' (phase, count), the log)."""
    import hf_ddpm.figures as figures
    import hf_ddpm.guidance_figures as guidance_figures

    counts, at_save = [], []
    for module, name in ((figures, "save_grid"), (figures, "write_rate_distortion_csv"),
                         (figures, "write_steps_tradeoff"), (guidance_figures, "save_grid"),
                         (guidance_figures, "write_guidance_tradeoff")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original, **k: (at_save.append(sum(counts)), _f(*a, **k)))
    handle = count_images(pipe.unet, counts)
    log = io.StringIO()
    with NetworkProgress(pipe.unet, stream=log) as bars:
        bars.start(*phases)
        write_figures(pipe, images, tmp_path, seed=1, **options)
    handle.remove()
    return at_save, counts, bars.done, log.getvalue()


def test_each_figure_is_a_phase_whose_total_is_its_work(tmp_path, monkeypatch):
    """Each figure's bar counts exactly the images the network processed for it — counted by an independent hook up to
    the moment the figure's file is written — and its calls too (chains of one batch, bounds in batch_size chunks);
    off a terminal each figure writes its start and its end."""
    pipe = DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=T))
    pipe.set_progress_bar_config(disable=True)
    images = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    phases = figure_phases(pipe.scheduler, len(images), steps=[T, 5, 2], batch_size=3)
    at_save, counts, done, log = figures_by_phase(pipe, images, tmp_path, monkeypatch, phases, batch_size=3,
                                                  steps=[T, 5, 2], steps_samples=0)
    totals = torch.tensor([phase.images for phase in phases]).cumsum(0).tolist()
    assert at_save == totals and sum(counts) == totals[-1] and len(counts) == sum(p.calls for p in phases)
    assert done == [(p, p.images) for p in phases]
    assert [line.split(":")[0] for line in log.splitlines()] == [p.name for p in phases for _ in "01"]


def test_a_class_conditional_models_figures_and_the_guidance_figures_are_phases(tmp_path, monkeypatch):
    """A class-conditional model with a null label: the class grid (guided scales take both branches in one call) and
    the guidance trade-off (every term of its chain, so exact) count what the network did."""
    pipe = tiny_conditional_pipeline(num_train_timesteps=T)
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(6) % pipe.num_classes
    guidance = dict(grid_samples=1, num_samples=0, num_inference_steps=4, num_timesteps=None)
    phases = figure_phases(pipe.scheduler, len(images), guidance=guidance, num_classes=pipe.num_classes)
    at_save, counts, done, _ = figures_by_phase(pipe, images, tmp_path, monkeypatch, phases, class_labels=labels,
                                                guidance_options=guidance, steps=None)
    assert [p.name for p in phases][-2:] == ["class grid", "guidance trade-off"]
    assert at_save == torch.tensor([p.images for p in phases]).cumsum(0).tolist() and done == [(p, p.images)
                                                                                                 for p in phases]
    assert len(counts) == sum(p.calls for p in phases)


def test_the_steps_tradeoff_phase_counts_its_samplers_bounds_and_samples():
    """steps_tradeoff over ddpm (K = T: the full bound, known), DDIM with η = 1 (a bound) and PNDM (none; its
    Runge–Kutta warm-up calls the network more often than K), each drawing samples at every K."""
    from hf_ddpm.steps_tradeoff import steps_tradeoff

    pipe = DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=T))
    pipe.set_progress_bar_config(disable=True)
    x0 = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1)).mul(255).round().div(127.5).sub(1)
    full = pipe.log_likelihood((x0 + 1) / 2)
    samplers = ("ddpm", "ddim:1", "pndm")
    phase = figure_phases(pipe.scheduler, len(x0), steps=[T, 4], samplers=samplers, steps_samples=6)[-1]
    counts = []
    handle = count_images(pipe.unet, counts)
    steps_tradeoff(pipe, x0, [T, 4], samplers=samplers, num_samples=6, full_bound=full)
    handle.remove()
    assert phase.name == "steps trade-off" and (sum(counts), len(counts)) == (phase.images, phase.calls)


def test_an_estimated_phase_ends_where_its_work_ends():
    """A phase estimated too long closes at the images it counted; one estimated too short counts the excess."""
    network = torch.nn.Linear(2, 2)
    log = io.StringIO()
    with NetworkProgress(network, stream=log) as bars:
        bars.start(cost.bound("estimate", 4, 10))
        for _ in range(7):
            network(torch.zeros(4, 2))
        bars.start(cost.bound("short", 2, 1))
        for _ in range(3):
            network(torch.zeros(2, 2))
    assert [counted for _, counted in bars.done] == [28, 6]
    assert log.getvalue().splitlines()[1].startswith("estimate: 100%")


def test_describe_run_cost_advises_only_when_the_evaluation_dwarfs_training_or_a_cpu():
    config = RunConfig.from_settings(dict(max_train_steps=100, resolution=8))  # the digits' defaults: figures, 64 × 1000 samples
    slow = NetworkCost(per_call=0.0, per_image=1e-3)
    phases = estimate.final_evaluation(config, 359).phases
    evaluation = slow.seconds(*phases)
    assert [p.name for p in phases][:2] == ["final samples", "full bound (rate–distortion pass)"]
    assert evaluation < cost.CPU_LIMIT_SECONDS and estimate.training_evaluations(config, 359, 0, 100)[1].images == 0

    def advice_lines(step_seconds, on_cpu):
        lines = estimate.describe_run_cost(config, num_eval_images=359, start_step=0, max_train_steps=100,
                                           step_seconds=step_seconds, network=slow, num_parameters=10**6,
                                           on_cpu=on_cpu)
        return [line for line in lines if "--" in line]

    assert advice_lines(2 * evaluation / 100, on_cpu=True) == []  # training twice as long as the evaluation
    line, = advice_lines(evaluation / 400, on_cpu=False)  # a quarter
    assert f"(≈ {cost.describe_seconds(evaluation)}) would take longer than the training" in line
    for flag in ("--num_samples 16", "--num_inference_steps 100", "--final_eval_timesteps 100", "--no-figures",
                 "--model_config_name_or_path"):
        assert flag in line
    shorter = config.replace(num_samples=16, num_inference_steps=100, final_eval_timesteps=100, figures=False)
    assert f"would make it ≈ {cost.describe_seconds(slow.seconds(*estimate.final_evaluation(shorter, 359).phases))}" \
        in line
    long = NetworkCost(per_call=0.0, per_image=2e-3 * cost.CPU_LIMIT_SECONDS / evaluation)  # twice the CPU limit
    cpu = estimate.advice(config, 359, long, train_seconds=1e9, on_cpu=True)
    assert cpu is not None and "is long for a CPU" in cpu
    assert estimate.advice(config, 359, long, train_seconds=1e9, on_cpu=False) is None


def test_the_full_size_preset_on_a_cpu_gets_its_line():
    config = RunConfig.from_settings(dict(resolution=32, train_data_dir="photos"))
    small = RunConfig.from_settings(dict(resolution=16, train_data_dir="photos"))
    network = NetworkCost(0.0, 1e-6)

    def preset_lines(config, on_cpu):
        lines = estimate.describe_run_cost(config, num_eval_images=8, start_step=0, max_train_steps=10,
                                           step_seconds=11.0, network=network, num_parameters=35_780_000,
                                           on_cpu=on_cpu)
        return [line for line in lines if "preset" in line]

    line, = preset_lines(config, on_cpu=True)
    assert "32×32" in line and "35.8M parameters" in line and "≈ 11 s" in line and "--model_config_name_or_path" in line
    assert preset_lines(config, on_cpu=False) == [] and preset_lines(small, on_cpu=True) == []


class WorkClock:
    """A clock by which a forward pass without gradients takes ``forward`` seconds and one with them ``training``:
    each read moves it on by the time of the kind of work around it."""

    def __init__(self, forward: float, training: float):
        self.now, self.forward, self.training = 0.0, forward, training

    def __call__(self) -> float:
        self.now += self.training if torch.is_grad_enabled() else self.forward
        return self.now


ESTIMATED = ("class bounds", "guidance trade-off")  # bounds from drawn timesteps: their counts are estimates


@pytest.mark.parametrize("figures,class_conditional", [(False, False), (True, False), (True, True)])
def test_the_trainer_says_its_cost_before_training_and_counts_its_final_phases(tiny_config, tmp_path, monkeypatch,
                                                                               capsys, figures, class_conditional):
    """A tiny run whose clock says a forward pass takes 10 s and a training step 0.01 s: before its first step it
    prints the estimate and the one line of advice; then each phase of its final evaluation counts exactly the images
    its estimate named (the bounds from drawn timesteps: about them), and an independent count at the network
    agrees with the counts the bars reported."""
    monkeypatch.setattr(cost, "clock", WorkClock(forward=10.0, training=0.01))
    monkeypatch.setattr(sys, "stderr", sys.stdout)  # the bars and the prints in one stream, in order
    settings = tiny_settings(tiny_config, tmp_path / "run", max_train_steps=3, final_eval_timesteps=None,
                             figures=figures, class_conditional=class_conditional)
    trainer = Trainer(RunConfig.from_settings(settings))
    counts, recorded = [], []

    class Recording(NetworkProgress):
        def __enter__(self):
            recorded.append(self)
            count_images(self.network, counts)
            return super().__enter__()

    monkeypatch.setattr("hf_ddpm.training.trainer.NetworkProgress", Recording)
    trainer.run()
    out = capsys.readouterr().out
    training_at = out.index("training: 0/3 steps")
    assert out.index("estimated on this machine: training ≈ 0.0 s (3 steps × 0.0 s") < training_at
    assert out.index("final evaluation ≈ ") < training_at
    advice, = [line for line in out.splitlines() if "--model_config_name_or_path" in line]
    assert "would take longer than the training" in advice and out.index(advice) < training_at
    bars, = recorded
    phases = [phase for phase in estimate.final_evaluation(trainer.config, len(trainer.eval_images),
                                                           trainer.num_classes).phases if phase.images]
    assert [phase for phase, _ in bars.done] == phases
    assert [(p.name, counted) for p, counted in bars.done if p.name not in ESTIMATED] == \
        [(p.name, p.images) for p in phases if p.name not in ESTIMATED]
    assert sum(counts) == sum(counted for _, counted in bars.done)
    # the trainer's figures (progressive generation; Figs. 7–8 are `hf-ddpm figures`') reuse the full bound's
    # rate–distortion pass; a class-conditional run adds its class bounds and the two guidance figures
    assert len(phases) == 2 + figures + 3 * class_conditional


def test_timing_a_training_step_leaves_the_run_as_it_was(tiny_config, tmp_path):
    """The RNG state, the weights and the (absent) gradients are those before the timing passes."""
    trainer = Trainer(RunConfig.from_settings(tiny_settings(tiny_config, tmp_path, max_train_steps=2)))
    rng = torch.get_rng_state()
    weights = {name: p.detach().clone() for name, p in trainer.unet.named_parameters()}
    assert trainer.time_training_step() > 0
    assert torch.equal(torch.get_rng_state(), rng)
    for name, parameter in trainer.unet.named_parameters():
        assert torch.equal(parameter, weights[name]) and parameter.grad is None


@pytest.fixture()
def tiny_model_dir(tmp_path):
    folder = tmp_path / "tiny-pipeline"
    DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(num_train_timesteps=T)).save_pretrained(folder)
    return str(folder)


def test_hf_ddpm_figures_says_its_cost_first_and_shows_each_figure(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """The estimate comes before any work, then each figure's bar, whose counts are the phases the estimate named."""
    from hf_ddpm.cli import main

    recorded = []
    monkeypatch.setattr(progress, "NetworkProgress", type("Recording", (NetworkProgress,), {
        "close": lambda self: (recorded.append(self), NetworkProgress.close(self))}))
    monkeypatch.setattr(sys, "stderr", sys.stdout)
    main(["figures", "--model", tiny_model_dir, "--num-images", "6", "--steps", "5", "--num-samples", "0",
          "--out", str(tmp_path / "figures")])
    out = capsys.readouterr().out
    assert out.index("estimated on this machine ≈ ") < out.index("Fig. 6 progressive generation: 0%")
    bars, = recorded
    assert [phase.name for phase, _ in bars.done] == ["Fig. 6 progressive generation", "Fig. 7 shared latents",
                                                     "Fig. 8 interpolation", "rate–distortion (Table 4, Fig. 5)",
                                                     "steps trade-off"]
    assert all(counted == phase.images for phase, counted in bars.done)
    assert "steps trade-off: 100%" in out


def test_hf_ddpm_sample_shows_the_pipelines_own_bar_as_lines(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from hf_ddpm.cli import main

    monkeypatch.setattr(sys, "stderr", sys.stdout)
    main(["sample", "--model", tiny_model_dir, "--num-images", "3", "--steps", "7", "--out", str(tmp_path / "g.png")])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines if line.startswith("sampling:")] == ["sampling: 0/7 steps",
                                                                                       "sampling: 7/7 steps"]


def test_hf_ddpm_evaluate_says_its_cost_first_and_counts_its_samples_and_bound(tiny_model_dir, monkeypatch, capsys):
    from hf_ddpm.cli import main

    recorded = []
    monkeypatch.setattr(progress, "NetworkProgress", type("Recording", (NetworkProgress,), {
        "close": lambda self: (recorded.append(self), NetworkProgress.close(self))}))
    monkeypatch.setattr(sys, "stderr", sys.stdout)
    main(["evaluate", "--model", tiny_model_dir, "--num-images", "5", "--num-samples", "6", "--batch-size", "4",
          "--num-inference-steps", "10"])
    out = capsys.readouterr().out
    assert out.index("estimated on this machine ≈ ") < out.index("samples: 0%") < out.index("held-out bound: 0%")
    bars, = recorded
    assert [(phase.name, counted) for phase, counted in bars.done] == [("samples", 6 * 10), ("held-out bound", 5 * 10)]
    assert [phase.calls for phase, _ in bars.done] == [2 * 10, 2 * 10]  # batches of 4
