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
