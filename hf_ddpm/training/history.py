"""The record of a run in progress: the loss of every optimizer step and the evaluations made during training,
checkpointed with the run so that a resumed run's record is complete; and their plot."""

from __future__ import annotations

import numpy as np


class TrainingHistory:
    """The mean training loss of every optimizer step (over all processes) and the held-out evaluations made during
    training, checkpointed with the run so that a resumed run's records are complete."""

    def __init__(self):
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.evaluations: list[dict] = []

    def append(self, step: int, loss: float) -> None:
        self.steps.append(int(step))
        self.losses.append(float(loss))

    def recent_mean(self, count: int = 100) -> float:
        """Mean of the last ``count`` losses (nan before the first)."""
        return float(np.mean(self.losses[-count:])) if self.losses else float("nan")

    def state_dict(self) -> dict:
        return {"steps": list(self.steps), "losses": list(self.losses), "evaluations": list(self.evaluations)}

    def load_state_dict(self, state: dict) -> None:
        self.steps = [int(s) for s in state["steps"]]
        self.losses = [float(v) for v in state["losses"]]
        self.evaluations = [dict(e) for e in state["evaluations"]]


def save_loss_plot(history: TrainingHistory, path: str, title: str = "training loss") -> None:
    """Plot the per-step loss (light) and its running mean over ~2 % of the run (dark), log scale, to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = np.asarray(history.steps), np.asarray(history.losses)
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    if len(losses):
        window = max(1, len(losses) // 50)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axes.plot(steps, losses, color="C0", alpha=0.3, lw=0.5, label="per step")
        axes.plot(steps[window - 1 :], smooth, color="C0", lw=1.5, label=f"mean of {window} steps")
        if (losses > 0).all():
            axes.set_yscale("log")
        axes.legend()
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def save_evaluation_plot(history: TrainingHistory, path: str) -> bool:
    """Plot the evaluations made during training against the step — the held-out bound estimate (± its standard
    error) and, where samples were judged, their FD and class-balance χ² — to ``path``; False (no file) when the run
    made no evaluation."""
    if not history.evaluations:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.asarray([e["step"] for e in history.evaluations])
    judged = [e for e in history.evaluations if e.get("eval_fd") is not None]
    figure, panels = plt.subplots(1, 2 if judged else 1, figsize=(10.0 if judged else 6.4, 4.0), squeeze=False)
    bound = panels[0, 0]
    bound.errorbar(steps, [e["eval_bits_per_dim"] for e in history.evaluations],
                   yerr=[e["eval_bits_per_dim_stderr"] for e in history.evaluations], marker="o", capsize=3)
    bound.set_xlabel("optimizer step")
    bound.set_ylabel("held-out bound (bits/dim)")
    bound.set_title("bound estimate")
    if judged:
        quality = panels[0, 1]
        judged_steps = [e["step"] for e in judged]
        quality.plot(judged_steps, [e["eval_fd"] for e in judged], marker="o", color="C1", label=judged[0]["eval_fd_name"])
        quality.set_xlabel("optimizer step")
        quality.set_ylabel(judged[0]["eval_fd_name"])
        quality.set_title(judged[0]["eval_quality_setting"])
        chi2 = [(e["step"], e["eval_class_chi2"]) for e in judged if e.get("eval_class_chi2") is not None]
        if chi2:
            balance = quality.twinx()
            balance.plot(*zip(*chi2), marker="s", color="C2", label="class χ²")
            balance.set_ylabel("class-balance χ² (even classes: ≈ K − 1)")
            balance.legend(loc="lower right")
        quality.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
