"""Publishing a trained pipeline on the Hugging Face Hub, one job per module.

* :mod:`.card` — the model card: :func:`write_model_card`, :func:`render_model_card` (the template, its metadata).
* :mod:`.card_facts` — what the card states, typed: the saved pipeline and the ``RunRecord``, read once.
* :mod:`.saved_pipeline` — the saved network and diffusion process, from the pipeline's configs.
* :mod:`.metadata` — :func:`check_card_metadata`, the offline check of the card's YAML.
* :mod:`.push` — what is pushed (:func:`files_to_push`), :func:`push_output_folder`, :class:`CheckpointPusher`,
  :class:`HubPushError`.
* :mod:`.remote_code` — :func:`remote_code_files`, the ``remote_code/`` bundle for diffusers-only users.

The ``hf-ddpm push`` command is in :mod:`hf_ddpm.cli`; the trainer's Hub flags are ``HubConfig``'s.
"""

from .card import render_model_card, write_model_card
from .metadata import check_card_metadata
from .push import CheckpointPusher, HubPushError, files_to_push, pipeline_files, push_output_folder
from .remote_code import remote_code_files

__all__ = ["CheckpointPusher", "HubPushError", "check_card_metadata", "files_to_push", "pipeline_files",
           "push_output_folder", "remote_code_files", "render_model_card", "write_model_card"]
