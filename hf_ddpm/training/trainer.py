"""``Trainer``: a training run built from a :class:`~hf_ddpm.training.config.RunConfig`, and its loop.

Building does every check before the first step (the data is decoded and checked, the model fits it, the batch fits
the data, a checkpoint to resume belongs to this configuration); :meth:`Trainer.train` runs optimizer steps with
periodic checkpoints, sample grids and held-out evaluations; :func:`~hf_ddpm.training.outputs.finish` writes the
outputs. ``training/train.py`` is the command line around it.
"""

from __future__ import annotations

import json
import math
import os
import time

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from ..contention import follow_the_machine
from ..cost import network_cost, synchronize, timed
from ..data import load_image_data
from ..errors import ParameterError
from ..losses import make_timestep_sampler
from ..presets import build_unet, preset_unet_config
from ..progress import NetworkProgress, bar_options
from ..scheduler import LEARNED_VARIANCE_TYPES
from .checkpointing import StopRequest, check_resumable, resolve_resume, save_checkpoint
from .config import MIN_JUDGED_IMAGES, RunConfig
from .data_order import EpochShuffleSampler
from .distributed import check_process_group
from .estimate import describe_run_cost
from .evaluation import periodic_evaluation
from .history import TrainingHistory
from .step import EvaluationNetwork, training_step
from .machine import cpu_threads


class Trainer:
    """Everything the loop touches, built and checked before the first step."""

    def __init__(self, config: RunConfig):
        self.started = time.time()
        self.threads = self._set_threads(config)
        compute, optim, output = config.compute, config.optim, config.output
        self.accelerator = accelerator = Accelerator(
            gradient_accumulation_steps=optim.gradient_accumulation_steps,
            mixed_precision=compute.mixed_precision,
            log_with=None if output.logger == "none" else output.logger,
            project_config=ProjectConfiguration(project_dir=output.output_dir, logging_dir=output.logging_path),
        )
        check_process_group(accelerator)
        set_seed(optim.seed)  # the UNet's initial weights
        self.scheduler = config.process.scheduler()
        data = config.data
        if data.resolution is not None and config.model.model_config_name_or_path is None:
            preset_unet_config(data.resolution)  # a resolution without a preset fails before the data is read
        self.data = load_image_data(
            dataset_name=data.dataset_name, dataset_config_name=data.dataset_config_name,
            train_data_dir=data.train_data_dir, image_column=data.image_column, resolution=data.resolution,
            center_crop=data.center_crop, random_flip=data.random_flip, validation_fraction=data.validation_fraction,
            seed=optim.seed, cache_dir=data.cache_dir, max_eval_images=data.max_eval_images,
            label_column=data.label_column if data.class_conditional else None,
        )
        self.config = config = config.replace(resolution=self.data.resolution)
        # class-conditional: the classes are 0 … K−1 and the null label is K, as in DiT
        self.null_class_label = None if self.data.class_names is None else len(self.data.class_names)
        if config.judges_samples and len(self.data.eval) < MIN_JUDGED_IMAGES:
            raise ParameterError("validation_fraction", f"the held-out images ({self.data.eval_split}) are "
                                 f"{len(self.data.eval)}; judging the samples against them needs at least "
                                 f"{MIN_JUDGED_IMAGES}: hold out more")
        unet = build_unet(self.data.resolution, self.data.channels,
                          learned_variance=config.process.variance_type in LEARNED_VARIANCE_TYPES,
                          config_name_or_path=config.model.model_config_name_or_path,
                          fourier_periods=config.model.fourier_periods,
                          num_class_embeds=None if self.null_class_label is None else self.null_class_label + 1)
        self.evaluation = EvaluationNetwork(unet, accelerator.device)
        if compute.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.fixed_settings = {**config.fixed_settings(), "unet": _unet_config(unet)}
        loader = self._dataloader(config)
        optimizer = torch.optim.AdamW(
            unet.parameters(), lr=optim.learning_rate, betas=(optim.adam_beta1, optim.adam_beta2),
            weight_decay=optim.adam_weight_decay, eps=optim.adam_epsilon, fused=True,
        )
        batches_per_epoch = math.ceil(len(loader) / accelerator.num_processes)  # per process, as prepared below
        self.steps_per_epoch = math.ceil(batches_per_epoch / optim.gradient_accumulation_steps)  # the last may be short
        self.max_train_steps = config.train_steps(self.steps_per_epoch)
        self.num_epochs = math.ceil(self.max_train_steps / self.steps_per_epoch)
        lr_scheduler = get_scheduler(
            optim.lr_scheduler, optimizer=optimizer,
            num_warmup_steps=optim.lr_warmup_steps * accelerator.num_processes,
            num_training_steps=self.max_train_steps * accelerator.num_processes,
        )
        self.ema = EMAModel(unet.parameters(), decay=optim.ema_max_decay, use_ema_warmup=True,
                            inv_gamma=optim.ema_inv_gamma, power=optim.ema_power, foreach=True) if optim.use_ema else None
        self.timestep_sampler = make_timestep_sampler(config.objective.timestep_sampler,
                                                      config.process.num_train_timesteps,
                                                      config.objective.importance_uniform_mix)
        self.history = TrainingHistory()
        self.images_seen = 0  # by this process, in this session
        self.unet, self.optimizer, self.loader, self.lr_scheduler = accelerator.prepare(
            unet, optimizer, loader, lr_scheduler)
        if self.ema is not None:
            self.ema.to(accelerator.device)
        for state in (self.ema, self.timestep_sampler, self.history):
            if state is not None:
                accelerator.register_for_checkpointing(state)
        self.eval_images = self.data.eval.tensor().to(accelerator.device)
        eval_labels = self.data.eval.label_tensor()
        self.eval_labels = None if eval_labels is None else eval_labels.to(accelerator.device)
        self.pusher = self._pusher() if accelerator.is_main_process else None
        self.start_step = self._resume()

    # ------------------------------------------------------------------------------------------ building

    @staticmethod
    def _set_threads(config: RunConfig):
        """torch's CPU threads for this process (see :mod:`.machine`)."""
        choice = cpu_threads(config.compute.num_threads)
        torch.set_num_threads(choice.threads)
        return choice

    def _dataloader(self, config: RunConfig):
        """:func:`training_dataloader`, checked to give every process at least one optimizer step per epoch."""
        optim, compute = config.optim, config.compute
        if compute.keep_decoded_mib > 0 and not self.data.train.keep_decoded(compute.keep_decoded_mib * 2**20):
            self.accelerator.print(f"the training images exceed keep_decoded_mib={compute.keep_decoded_mib}: "
                                   "decoding per item")
        loader = training_dataloader(self.data.train, config)
        needed = self.accelerator.num_processes * optim.gradient_accumulation_steps
        if len(loader) < needed:
            raise ParameterError("train_batch_size", f"{optim.train_batch_size} × {self.accelerator.num_processes} "
                                 f"process(es) × gradient_accumulation_steps {optim.gradient_accumulation_steps} "
                                 f"exceeds the {len(self.data.train)} training images: not one optimizer step per "
                                 "epoch")
        return loader

    def _pusher(self):
        hub = self.config.hub
        if not hub.push_every_checkpoint:
            return None
        from ..hub import CheckpointPusher

        return CheckpointPusher(hub.hub_model_id, token=hub.hub_token, private=hub.hub_private_repo)

    def _resume(self) -> int:
        """Load the checkpoint named by ``resume_from_checkpoint`` (if any); the step to continue from."""
        output = self.config.output
        path = resolve_resume(output.resume_from_checkpoint, output.output_dir)
        if path is None:
            if output.resume_from_checkpoint is not None:
                self.accelerator.print(f"no checkpoint in {output.output_dir} yet; starting from step 0")
            return 0
        step = check_resumable(path, self.fixed_settings)
        try:
            self.accelerator.load_state(path)
        except (RuntimeError, KeyError, FileNotFoundError) as error:
            raise ParameterError("resume_from_checkpoint", f"{path!r} could not be loaded into this run: {error}") \
                from error
        self.accelerator.print(f"resumed from {path} at step {step}")
        return step

    def start_trackers(self) -> None:
        """On the main process: the output folder, and the tracker (TensorBoard events and wandb's run folder go under
        ``logging_dir``) with the settings as hyper-parameters (lists as text, as TensorBoard takes nothing else)."""
        output = self.config.output
        os.makedirs(output.output_dir, exist_ok=True)
        if output.logger != "none":
            os.makedirs(output.logging_path, exist_ok=True)
            hyperparameters = {name: value if isinstance(value, (int, float, str, bool)) else str(value)
                               for name, value in self.config.settings().items() if value is not None}
            self.accelerator.init_trackers("hf-ddpm", config=hyperparameters,
                                           init_kwargs={"wandb": {"dir": output.logging_path}})

    def describe(self) -> str:
        """One line: the data, the model's size, the steps and batches, the CPU threads."""
        data, optim, processes = self.data, self.config.optim, self.accelerator.num_processes
        return (f"{data.name}: {len(data.train)} training images ({data.resolution}px, {data.channels} channel(s)); "
                f"{self.num_parameters / 1e6:.2f}M parameters; {self.max_train_steps} steps of {optim.train_batch_size} × {processes} "
                f"process(es) × {optim.gradient_accumulation_steps} images; {self.threads.threads} CPU thread(s) per "
                f"process ({self.threads.reason})")

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    @property
    def num_classes(self) -> int | None:
        """K, the classes of a class-conditional run (None: an unconditional run)."""
        return None if self.null_class_label is None else len(self.data.class_names)

    def estimate(self) -> list[str]:
        """The run's cost on this machine, in lines (:func:`.estimate.describe_run_cost`): an optimizer step and the
        evaluation network timed here, before the first step."""
        return describe_run_cost(
            self.config, num_eval_images=len(self.eval_images), start_step=self.start_step,
            max_train_steps=self.max_train_steps, step_seconds=self.time_training_step(),
            network=network_cost(self.evaluation.unet, self.config.optim.train_batch_size),
            num_parameters=self.num_parameters, on_cpu=self.accelerator.device.type == "cpu",
            num_classes=self.num_classes)

    def time_training_step(self) -> float:
        """Seconds of an optimizer step's forward and backward passes (``gradient_accumulation_steps`` micro-batches of
        ``train_batch_size`` images), from one micro-batch of random images timed after one to warm up. The run is
        left as it was: the RNG states are restored, the gradients dropped, and no gradients are exchanged."""
        accelerator, optim, data = self.accelerator, self.config.optim, self.data
        shape = (optim.train_batch_size, data.channels, data.resolution, data.resolution)
        clean = (torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(accelerator.device)
        labels = None if self.null_class_label is None else \
            torch.zeros(shape[0], dtype=torch.long, device=accelerator.device)

        def forward_backward():
            accelerator.backward(self._training_step(clean, labels, micro_step=0).loss)
            synchronize(accelerator.device)

        devices = [accelerator.device] if accelerator.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), accelerator.no_sync(self.unet):
            seconds = timed(forward_backward)
        self.unet.zero_grad(set_to_none=True)
        return seconds * optim.gradient_accumulation_steps

    def _training_step(self, clean: torch.Tensor, labels: torch.Tensor | None, micro_step: int):
        """:func:`.step.training_step` of a micro-batch with the run's objective."""
        objective = self.config.objective
        return training_step(
            self.accelerator, self.unet, self.scheduler, self.timestep_sampler, clean, seed=self.config.optim.seed,
            micro_step=micro_step, loss_type=objective.loss_type, simple_weight=objective.simple_weight,
            importance=objective.timestep_sampler != "uniform", class_labels=labels,
            label_dropout=objective.label_dropout, null_class_label=self.null_class_label,
        )

    def evaluation_unet(self) -> torch.nn.Module:
        """The network with the weights to evaluate (EMA if kept), float32, eval mode (see :class:`EvaluationNetwork`)."""
        return self.evaluation.load(self.accelerator.unwrap_model(self.unet), self.ema)

    def checkpoint(self, step: int) -> None:
        output = self.config.output
        save_checkpoint(self.accelerator, output.output_dir, step, self.fixed_settings, output.checkpoints_total_limit)

    # ------------------------------------------------------------------------------------------ the run

    def run(self):
        """Train, checkpoint the last step, write the outputs (:func:`.outputs.finish`) and push them if asked: the
        run's :class:`~hf_ddpm.training.record.RunRecord` (None on processes other than the main one). A failed
        push raises :class:`~hf_ddpm.hub.HubPushError` after the outputs are complete."""
        from .outputs import finish, push

        if self.accelerator.is_main_process:
            self.start_trackers()
        self.accelerator.print(self.describe())
        with follow_the_machine(self.threads):  # fewer threads while other processes keep the cores busy
            for line in self.estimate():
                self.accelerator.print(line)
            train_started = time.time()
            step = self.train()
            if self.config.output.checkpointing_steps:
                self.checkpoint(step)
            with NetworkProgress(self.evaluation.unet, enabled=self.accelerator.is_main_process) as progress:
                record = finish(self, step, train_seconds=time.time() - train_started, progress=progress)
        url = push(self)
        if url is not None:
            print(f"pushed to {url}")
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        return record

    def train(self) -> int:
        """Optimizer steps from ``start_step`` to ``max_train_steps``; the last step done. Ctrl-C (or SIGTERM) on
        any process: every process stops at the same step, a checkpoint is written, KeyboardInterrupt is raised."""
        accelerator, config = self.accelerator, self.config
        first_epoch, step_in_epoch = divmod(self.start_step, self.steps_per_epoch)
        skip = step_in_epoch * config.optim.gradient_accumulation_steps  # micro-batches of the epoch already done
        progress = tqdm(total=self.max_train_steps, initial=self.start_step,
                        **bar_options("training", unit="step", enabled=accelerator.is_local_main_process))
        step = self.start_step
        importance = config.objective.timestep_sampler != "uniform"
        with StopRequest() as stop:
            for epoch in range(first_epoch, self.num_epochs):
                self.data.train.set_epoch(epoch)
                self.loader.set_epoch(epoch)
                batches = accelerator.skip_first_batches(self.loader, skip) if epoch == first_epoch and skip \
                    else self.loader
                self.unet.train()
                for batch_index, batch in enumerate(batches, start=skip if epoch == first_epoch else 0):
                    clean, labels = batch if self.null_class_label is not None else (batch, None)
                    self.images_seen += clean.shape[0]
                    with accelerator.accumulate(self.unet):
                        result = self._training_step(clean, labels, micro_step=epoch * len(self.loader) + batch_index)
                        if importance:  # its copy to the host overlaps the backward pass on a GPU
                            self.timestep_sampler.update(result.timesteps, result.bound_terms)
                        accelerator.backward(result.loss)
                        if accelerator.sync_gradients and config.optim.max_grad_norm > 0:
                            accelerator.clip_grad_norm_(self.unet.parameters(), config.optim.max_grad_norm)
                        self.optimizer.step()
                        self.lr_scheduler.step()
                        self.optimizer.zero_grad(set_to_none=True)
                    if not accelerator.sync_gradients:
                        continue
                    step += 1
                    if self.ema is not None:
                        self.ema.step(self.unet.parameters())
                    mean_loss = accelerator.reduce(result.loss.detach(), reduction="mean").item()
                    self.history.append(step, mean_loss)
                    logs = {"loss": mean_loss, "lr": self.lr_scheduler.get_last_lr()[0]}
                    progress.update(1)
                    progress.set_postfix(loss=f"{self.history.recent_mean(50):.4f}", lr=f"{logs['lr']:.2e}")
                    self._periodic_work(step, logs)
                    accelerator.log(logs, step=step)
                    if stop.agreed(accelerator):
                        progress.close()
                        self.checkpoint(step)
                        accelerator.print(f"stopped on request at step {step}; checkpoint written, resume with "
                                          "--resume_from_checkpoint latest")
                        raise KeyboardInterrupt
                    if step >= self.max_train_steps:
                        break
                skip = 0
                if step >= self.max_train_steps:
                    break
        progress.close()
        return step

    def _periodic_work(self, step: int, logs: dict) -> None:
        """Checkpoints every ``checkpointing_steps`` (pushed in the background with ``push_every_checkpoint``),
        sample grids every ``save_images_steps``, held-out evaluations every ``eval_steps`` (logged into ``logs``)."""
        output, accelerator = self.config.output, self.accelerator
        before_end = step < self.max_train_steps
        if output.checkpointing_steps and step % output.checkpointing_steps == 0 and before_end:
            self.checkpoint(step)
            if self.pusher is not None:
                self.pusher.push_pipeline(self.pipeline(), step)
        sample_now = output.save_images_steps and step % output.save_images_steps == 0 and before_end
        eval_now = output.eval_steps and step % output.eval_steps == 0 and before_end
        if accelerator.is_main_process and (sample_now or eval_now):
            periodic_evaluation(self, step, logs, sample=bool(sample_now), evaluate=bool(eval_now))
        if sample_now or eval_now:
            accelerator.wait_for_everyone()  # the other processes wait for the main one's evaluation

    def pipeline(self):
        """A ``DDPMDocPipeline`` of the evaluation network (EMA weights, float32) and a copy of the scheduler; for a
        class-conditional run with the classes' names, the null label K and the training label frequencies; with the
        importance sampler's √E[L_t²] as the proposal of bound estimates (``bound_proposal``), once it has one."""
        from ..pipelines import DDPMDocPipeline

        scale = self.timestep_sampler.term_scale()
        pipeline = DDPMDocPipeline(
            unet=self.evaluation_unet(), scheduler=type(self.scheduler).from_config(self.scheduler.config),
            class_names=self.data.class_names, null_class_label=self.null_class_label,
            class_frequencies=self.data.class_frequencies, bound_proposal=None if scale is None else scale.tolist())
        pipeline.set_progress_bar_config(disable=True)
        return pipeline


def training_dataloader(dataset, config: RunConfig) -> torch.utils.data.DataLoader:
    """Shuffled full batches whose order is a function of (seed, epoch) (Accelerate shards them over processes)."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=config.optim.train_batch_size, sampler=EpochShuffleSampler(len(dataset), config.optim.seed),
        num_workers=config.compute.dataloader_num_workers, drop_last=True,
    )


def _unet_config(unet) -> dict:
    """The UNet's configuration as JSON values (what a resumed run's network must equal)."""
    return json.loads(json.dumps({key: value for key, value in unet.config.items() if not key.startswith("_")}))
