"""Pushing to the Hub: what an output folder contributes, the push itself, and background pushes during training.

What is pushed is said once, as huggingface_hub's allow/ignore patterns (:func:`push_patterns`, matched by its own
``filter_repo_objects``): the saved pipeline, the card, JSON records and images, never ``checkpoint-*/`` (optimizer,
LR-scheduler and random states), logs or hidden files. :func:`push_output_folder` adds what huggingface_hub cannot
know — the card rendered for the repo it goes to and the ``remote_code/`` bundle — in a staging folder of links and
hands it to ``HfApi.upload_folder``: one commit, the output folder only read. :class:`CheckpointPusher` saves the
pipeline at a checkpoint and uploads it with ``HfApi.run_as_future``, never blocking or failing training.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import filter_repo_objects

from ..errors import ParameterError, check_repo_id
from ..training.record import RUN_FILE, RunRecord
from .card import CARD_FILE, render_model_card
from .remote_code import remote_code_files
from .saved_pipeline import read_pipeline_configs

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
# Never pushed, at any depth: accelerate checkpoints, logs (TensorBoard, wandb), hidden files, byte code.
NEVER_PUSHED = tuple(p for name in ("checkpoint-*", "checkpoints/*", "logs/*", ".*", "__pycache__/*")
                     for p in (name, f"*/{name}"))


class HubPushError(RuntimeError):
    """A push to the Hub failed; the message says why and how to retry. The local output is untouched."""


def pipeline_patterns(folder: str | os.PathLike) -> list[str]:
    """Allow patterns of a saved pipeline: ``model_index.json`` and the folder of every component it names."""
    model_index, _, _ = read_pipeline_configs(Path(folder))
    components = [name for name, value in model_index.items()
                  if not name.startswith("_") and isinstance(value, list) and value and value[0] is not None]
    return ["model_index.json", *(f"{name}/*" for name in components)]


def push_patterns(folder: str | os.PathLike) -> list[str]:
    """Allow patterns of a push: the pipeline, the card, JSON records (metrics, ``training_run.json``), the tables of
    the paper's experiments (CSV) and images."""
    images = [f"*{suffix}" for s in IMAGE_SUFFIXES for suffix in (s, s.upper())]
    return [*pipeline_patterns(folder), CARD_FILE, "*.json", "*.csv", *images]


def pipeline_files(folder: str | os.PathLike) -> list[str]:
    """Relative POSIX paths of the saved pipeline in ``folder`` (``ValueError`` when none is saved there)."""
    return _matching(Path(folder), pipeline_patterns(folder))


def files_to_push(folder: str | os.PathLike) -> list[str]:
    """What a push uploads from an output folder, as relative POSIX paths (:func:`push_patterns` less
    :data:`NEVER_PUSHED`; ``README.md`` is replaced by the card rendered for the repo)."""
    return _matching(Path(folder), push_patterns(folder))


def _matching(folder: Path, allow: list[str]) -> list[str]:
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return list(filter_repo_objects(paths, allow_patterns=allow, ignore_patterns=list(NEVER_PUSHED)))


def push_output_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload DDPM pipeline trained with hf-ddpm",
) -> str:
    """Create ``repo_id`` if needed and upload the output ``folder`` in one commit; returns the commit URL.

    Uploads :func:`files_to_push` with ``README.md`` rendered for ``repo_id`` (from ``training_run.json``; a folder
    without one keeps its own ``README.md``; a pipeline saved by hand gets a card from its configs alone) and
    :func:`~hf_ddpm.hub.remote_code.remote_code_files`. A bad ``folder`` or ``repo_id`` raises ``ValueError`` before
    any network call; any failure of the remote side (no network, bad token, name taken, server error) raises
    :class:`HubPushError` with the reason. The folder is only read.
    """
    folder = Path(folder)
    check_repo_id("repo_id", repo_id)
    if not folder.is_dir():
        raise ParameterError("folder", f"={str(folder)!r} is not a directory")
    files = files_to_push(folder)  # ValueError when no pipeline is saved there
    card = _card_text(folder, repo_id)  # rendering errors surface here, before any network call
    api = HfApi(token=token)
    try:
        created_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if created_id != repo_id:  # "name" -> "user/name": the card's snippet must load the full id
            repo_id, card = created_id, _card_text(folder, created_id)
        with tempfile.TemporaryDirectory(prefix="hf-ddpm-push-") as staging:
            _stage(Path(staging), folder, [f for f in files if f != CARD_FILE],
                   {CARD_FILE: card.encode("utf-8"), **remote_code_files()})
            return api.upload_folder(repo_id=repo_id, folder_path=staging, commit_message=commit_message).commit_url
    except Exception as err:  # noqa: BLE001 - every failure of the remote side becomes one clear error
        raise HubPushError(_explain_push_failure(err, folder, repo_id, api.endpoint)) from err


def _card_text(folder: Path, repo_id: str) -> str:
    """The card to upload for ``repo_id``: rendered from the folder's run record, else its own ``README.md``, else
    (a pipeline saved by hand) rendered from the saved configs alone."""
    if not (folder / RUN_FILE).is_file() and (folder / CARD_FILE).is_file():
        return (folder / CARD_FILE).read_text(encoding="utf-8")
    return str(render_model_card(folder, RunRecord.load(folder), repo_id=repo_id))


def _stage(staging: Path, folder: Path, files: list[str], generated: dict[str, bytes]) -> None:
    """Fill ``staging`` with links to ``folder``'s ``files`` (copies where links are not allowed) and ``generated``."""
    for rel in files:
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to((folder / rel).resolve())
        except OSError:  # e.g. Windows without the symlink privilege
            shutil.copyfile(folder / rel, target)
    for rel, data in generated.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(data)


def _explain_push_failure(err: BaseException, folder: Path, repo_id: str, endpoint: str) -> str:
    """A message for a failed push: what went wrong, that the local files are intact, and how to retry."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    status = getattr(getattr(err, "response", None), "status_code", None)
    namespace = repo_id.split("/")[0] if "/" in repo_id else "your namespace"
    if status == 401:
        reason = "the Hub rejected the token (401 Unauthorized); pass a write token with --hub_token/--token or run `hf auth login`"
    elif status == 403:
        reason = (f"the token may not write to {namespace} (403 Forbidden): the repo name may belong to someone else, "
                  "or the token is read-only")
    elif status == 409:
        reason = "the Hub reported a conflict (409): the repo name is taken, or another commit landed at the same time"
    elif status is not None:
        reason = f"the Hub answered HTTP {status}"
    elif isinstance(err, OfflineModeIsEnabled):
        reason = "HF_HUB_OFFLINE is set, so huggingface_hub makes no network calls"
    elif isinstance(err, (ConnectionError, OSError)) or "connect" in type(err).__name__.lower():
        reason = f"cannot reach the Hub at {endpoint}"
    else:
        reason = type(err).__name__
    detail = str(err).strip().splitlines()
    detail_text = f" ({detail[0][:300]})" if detail else ""
    return (f"Pushing {folder} to the Hub repo {repo_id!r} failed: {reason}{detail_text}. "
            f"The local output in {folder} is complete and unchanged; push it later with "
            f"`hf-ddpm push --folder {folder} --repo-id {repo_id}`.")


class CheckpointPusher:
    """Pushes the pipeline at each checkpoint to the Hub from a background thread (``push_every_checkpoint``).

    :meth:`push_pipeline` saves the pipeline to a temporary folder synchronously (so the weights pushed are the ones
    at that step) and returns at once; ``HfApi.run_as_future`` runs the upload (``upload_folder``) on one worker
    thread. While a push is still running a new one is skipped (the next checkpoint or the final push carries
    newer weights anyway). Failures are logged and collected in :attr:`errors`, never raised into the training
    loop. Only weights and configs are pushed, never optimizer or accelerate state. Call :meth:`close` before the
    final :func:`push_output_folder`, so a late checkpoint commit cannot land after the final one.
    """

    def __init__(self, repo_id: str, *, token: str | None = None, private: bool = False):
        check_repo_id("repo_id", repo_id)
        self.repo_id = repo_id
        self.private = private
        self.errors: list[str] = []
        self.skipped_steps: list[int] = []
        self._api = HfApi(token=token)
        self._future: Future | None = None
        self._repo_ready = False
        self._lock = threading.Lock()

    def push_pipeline(self, pipeline, step: int) -> Future | None:
        """Save ``pipeline`` now and upload it in the background; None when skipped because a push is in flight."""
        if self._future is not None and not self._future.done():
            logger.info("Hub push of an earlier checkpoint still running; not pushing step %d", step)
            self.skipped_steps.append(step)
            return None
        staging = Path(tempfile.mkdtemp(prefix="hf-ddpm-push-"))
        try:
            pipeline.save_pretrained(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._future = self._api.run_as_future(self._upload, staging, step)
        return self._future

    def _upload(self, staging: Path, step: int) -> str | None:
        try:
            if not self._repo_ready:
                self.repo_id = self._api.create_repo(self.repo_id, private=self.private, exist_ok=True).repo_id
                self._repo_ready = True
            return self._api.upload_folder(repo_id=self.repo_id, folder_path=staging,
                                           allow_patterns=pipeline_patterns(staging),
                                           commit_message=f"Training in progress: step {step}").commit_url
        except Exception as err:  # noqa: BLE001 - a failed checkpoint push must never stop training
            message = f"checkpoint push at step {step}: " + _explain_push_failure(err, staging, self.repo_id, self._api.endpoint)
            with self._lock:
                self.errors.append(message)
            logger.warning("%s Training goes on.", message)
            return None
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def close(self, timeout: float | None = None) -> list[str]:
        """Wait (up to ``timeout`` seconds) for the push in flight; the errors of all checkpoint pushes."""
        if self._future is not None:
            try:
                self._future.result(timeout=timeout)
            except TimeoutError:
                logger.warning("Hub checkpoint push still running after %s s; not waiting longer", timeout)
        return list(self.errors)
