"""The reusable parts of ``training/train.py``, where tests and other scripts reach them.

* :mod:`.config` — what a run is (``RunConfig`` and its sections), validated once.
* :mod:`.record` — what it produced (``RunResults``, ``RunRecord``), saved and loaded in one place.
* :mod:`.data_order` — the seeded order of draws and batches, so a resumed run repeats an uninterrupted one.
* :mod:`.history` — the per-step losses and evaluations during training, and their plot.
* :mod:`.checkpointing` — atomic, resumable checkpoints; Ctrl-C.
* :mod:`.distributed` — the launch check of a multi-process run.
* :mod:`.held_out` — the held-out bound during and after training.
"""

from .data_order import EpochShuffleSampler, seeded_generator, step_generator
from .held_out import held_out_bound
from .history import TrainingHistory, save_loss_plot
from .record import write_json

__all__ = ["EpochShuffleSampler", "TrainingHistory", "held_out_bound", "save_loss_plot",
           "seeded_generator", "step_generator", "write_json"]
