"""The DC-IGN LightningModule: DC-IGN and the entangled networks it is compared with.

Training uses manual optimization (``automatic_optimization = False``) because one step drives
independent networks: DC-IGN, trained with forward clamping and invariance targeting on
factor-grouped batches, and (unless ``baseline: null``) the entangled baseline of the paper's
section 4.1.1 (same architecture, plain SGVB, same images). Their parameters are disjoint, so a
single backward of the summed losses gives each network exactly its own gradient; one backward
per step also keeps DDP's gradient reducer in its ordinary one-forward-one-backward rhythm.

Its parts come from nested config nodes (``net``, ``objective``, ``optimizer``, ``scheduler``),
each a ``_target_`` that Hydra builds here; the hyper-parameters a checkpoint stores stay plain
containers, so checkpoints load with ``weights_only=True``. What callbacks, evaluation and the
explorer use is :class:`~dcign.model.interface.CodeModel`; the scores of every network on
validation and test groups are kept by a callback of the run
(:class:`~dcign.scoring.network_scores.NetworkScores`), which reads the module through
:class:`~dcign.model.interface.ScoredModel`, so the module holds only what trains and what a
checkpoint needs to rebuild it. How the run executes it (memory layout, compilation, clipping,
the non-finite policy) is set where the run is built (:mod:`dcign.run.runtime`), not stored
with the weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytorch_lightning as pl
import torch

from dcign.batch import GroupedBatch
from dcign.errors import ConfigError, RunStoppedError
from dcign.model.baseline_options import BaselineOptions, hold_unscheduled
from dcign.model.compatibility import check_compatible
from dcign.model.layout import LatentLayout
from dcign.model.networks import WEIGHT_KEYS, Architecture, InverseGraphicsNet
from dcign.model.noise import TrainingNoise
from dcign.model.objectives.base import LossParts, Objective, SGVBObjective
from dcign.model.optimization import COSINE_TO_ZERO, build_node, optimizers_for
from dcign.model.pose_training import PoseTraining, pose_loss
from dcign.model.step_options import StepOptions
from dcign.model.volume import LatentRoles, VolumeDecoder, full_turns, one_latent_per_pose

log = logging.getLogger(__name__)

RUN_CONFIG_KEY = "dcign_run_config"


class DCIGN(pl.LightningModule):
    """DC-IGN and its comparison networks; batches are :class:`~dcign.batch.GroupedBatch`."""

    def __init__(
        self,
        net: Mapping[str, Any],
        objective: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        layout: Mapping[str, int | None],
        baseline: Mapping[str, Any] | None,
        scheduler: Mapping[str, Any] | None = COSINE_TO_ZERO,
        noise_seed: int = 0,
        pose: Mapping[str, Any] | None = None,
        factors: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        scheduler = None if scheduler is None else dict(scheduler)  # plain: pickled
        self.save_hyperparameters()
        self.automatic_optimization = False
        arch: Architecture = build_node(net, "model.net").for_data(factors)
        self.objective: Objective = build_node(objective, "model.objective")
        volume = arch.decoder == "volume"
        # A volume decoder reads each pose group as one angle (dcign/model/volume.py).
        sizes = one_latent_per_pose(dict(layout)) if volume else dict(layout)
        self._layout = LatentLayout.from_sizes(sizes, arch.latent_dim)
        self.objective = self.objective.for_layout(self._layout)
        roles = LatentRoles.of(self._layout) if volume else None
        circle = volume and arch.volume_turn_reading == "circle"
        self.dcign = InverseGraphicsNet(arch, roles, full_turns(roles, factors) if circle else [])
        pose_training = build_node(pose, "model.pose") if pose else PoseTraining()
        self._pose = pose_loss(pose_training, roles, factors)
        # Each network with the loss that trains it; the noise stream keeps their draws apart.
        self._losses: dict[str, Callable[[GroupedBatch, bool], LossParts]] = {
            "dcign": self.dcign_loss
        }
        self.comparisons: dict[str, InverseGraphicsNet] = {}
        # Each network's parameter-group options beyond its parameters.
        self._group_options: dict[str, BaselineOptions] = {}
        if baseline is not None:
            # Plain SGVB (paper 4.1.1) with its own KL weight, learning rate and schedule.
            options = BaselineOptions.from_node(baseline)
            self._group_options["baseline"] = options
            self.baseline_objective = SGVBObjective.beside(
                self.objective,
                beta=float(options.beta),
                detail_weight=float(options.detail_weight),
            )
            # The paper's entangled network: an image decoder whatever DC-IGN's is.
            self.baseline = InverseGraphicsNet(replace(arch, decoder="image"))
            self.comparisons["baseline"] = self.baseline
            self._losses["baseline"] = self.baseline_loss
        # Row t: latents trained by group type t (the layout's t-th group). Not persistent: it is
        # a function of the hyper-parameters, which checkpoints are checked against on loading.
        self.register_buffer("active_masks", self._layout.active_masks(), persistent=False)
        self._optimizer_factory = build_node(optimizer, "model.optimizer")
        self._scheduler_factory = build_node(scheduler, "model.scheduler") if scheduler else None
        # Clipping and the non-finite policy: set by the run builder (config node `runtime`).
        self.step_options = StepOptions()
        self._noise = TrainingNoise(noise_seed)
        self.skipped_steps = 0
        # What the optimizer steps, collected once (walking the modules costs ~0.1 ms a step).
        self._stepped: tuple[torch.nn.Parameter, ...] = ()
        # The whole run's resolved config, stored in every checkpoint so that evaluation can
        # rebuild the same data set from the checkpoint alone.
        self.run_config: dict[str, Any] | None = None

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any]) -> DCIGN:
        """The module a loaded checkpoint holds."""
        model = cls(**checkpoint["hyper_parameters"])
        model.on_load_checkpoint(dict(checkpoint))
        model.load_state_dict(checkpoint["state_dict"])
        return model

    # ----------------------------------------------------------------- public interface
    @property
    def layout(self) -> dict[str, list[int]]:
        """Group name -> latent indices, in layout order (= group-type ids of a batch)."""
        return self._layout.as_dict()

    @property
    def latent_layout(self) -> LatentLayout:
        """The named latent groups, with the code size and each group type's active latents."""
        return self._layout

    @property
    def networks(self) -> dict[str, InverseGraphicsNet]:
        """Every trained network by name: ``dcign`` first, then the comparisons."""
        return {"dcign": self.dcign, **self.comparisons}

    @property
    def entangled_networks(self) -> list[str]:
        """The networks whose latents are not named after factors, so that scoring them needs
        each factor's latents found from data: every comparison, and DC-IGN itself when its
        objective infers which latents a group shares instead of clamping named ones."""
        named = [] if self.objective.entangled else ["dcign"]
        return [name for name in self.networks if name not in named]

    @property
    def angle_factors(self) -> dict[str, list[str]]:
        """Network name -> the factors whose latent it reads as an angle in radians (a volume
        decoder turns by them), so that their slope against the true angle is scored."""
        decoder = self.dcign.decoder
        return {"dcign": list(decoder.roles.pose)} if isinstance(decoder, VolumeDecoder) else {}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[N, C, H, W]`` in [0, 1] -> posterior ``(mu, logvar)``, each ``[N, D]``."""
        return self.dcign.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes ``[N, D]`` -> images ``[N, C, H, W]`` of pixel probabilities in [0, 1]."""
        return self.dcign.decode(z)

    # ----------------------------------------------------------------- losses
    def dcign_loss(self, batch: GroupedBatch, deterministic: bool = False) -> LossParts:
        """DC-IGN's objective; ``deterministic`` decodes posterior means (evaluation)."""
        x = batch.images
        active = self.active_masks[batch.group_type]
        noise = self._noise_for(x, stream=0, deterministic=deterministic)
        if self._pose is not None:
            return self._pose.loss(self.objective, self.dcign, batch, active, noise)
        return self.objective.loss(self.dcign.encode, self.dcign.decode_logits, x, active, noise)

    def baseline_loss(self, batch: GroupedBatch, deterministic: bool = False) -> LossParts:
        """The entangled baseline's plain SGVB objective on the same images."""
        x = batch.images
        noise = self._noise_for(x, stream=1, deterministic=deterministic)
        return self.baseline_objective.loss(
            self.baseline.encode, self.baseline.decode_logits, x, noise=noise
        )

    def network_losses(
        self, batch: GroupedBatch, deterministic: bool = False
    ) -> dict[str, LossParts]:
        """Every network's loss on ``batch``, by network name (``dcign`` first)."""
        return {name: loss(batch, deterministic) for name, loss in self._losses.items()}

    def _noise_for(self, x: torch.Tensor, stream: int, deterministic: bool) -> torch.Tensor:
        shape = (*x.shape[:2], self._layout.latent_dim)
        if deterministic:
            return x.new_zeros(shape)
        rank, world_size = (
            (self.trainer.global_rank, self.trainer.world_size) if self._trainer else (0, 1)
        )
        return self._noise.draw(shape, x.device, (stream, self.global_step), rank, world_size)

    # ----------------------------------------------------------------- Lightning hooks
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_config is not None:
            checkpoint[RUN_CONFIG_KEY] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("hyper_parameters", {})
        check_compatible(saved, self.hparams, WEIGHT_KEYS)
        self.read_as_saved(saved.get("net") or {}, checkpoint.get("state_dict", {}))
        self.run_config = checkpoint.get(RUN_CONFIG_KEY)

    def read_as_saved(self, net: Mapping[str, Any], state: Mapping[str, Any]) -> None:
        """A volume network as a checkpoint saved before its options existed was trained:
        turning about the image's vertical whatever the data's camera, and reading a full turn
        as one output (its weights have no turn head). Called before the weights load, so
        that they fit."""
        decoder, encoder = self.dcign.decoder, self.dcign.encoder
        if isinstance(decoder, VolumeDecoder) and "volume_held_elevation" not in net:
            decoder.held_elevation = 0.0
        saved_circle = "dcign.encoder.turn.weight" in state
        if encoder.turn is not None and not saved_circle:
            encoder.turn = None
        elif encoder.turn is None and saved_circle:
            raise ConfigError(
                "The checkpoint's encoder reads full-turn angles as a circle "
                "(model.net.volume_turn_reading=circle) and this run's does not; resume with "
                "the setting it was trained with."
            )

    def compiled_parts(self) -> list[torch.nn.Module]:
        """What ``runtime.compile=true`` compiles: every network's encoder and decoder."""
        return [part for net in self.networks.values() for part in (net.encoder, net.decoder)]

    def configure_optimizers(self) -> dict[str, Any]:
        """One optimizer over every network, a parameter group each.

        Adam (and every per-parameter optimizer) updates each parameter from its own gradient
        and state, so one optimizer with a group per network steps each network exactly as
        separate optimizers would; but Lightning counts one ``global_step`` per batch instead
        of one per optimizer, so ``trainer.max_steps``, ``every_n_train_steps``, checkpoint
        names and the logged step all count batches.
        """
        nets = self.networks
        self._stepped = tuple(p for net in nets.values() for p in net.parameters())
        groups = [
            self._group_options[name].param_group(list(net.parameters()))
            if name in self._group_options
            else {"params": list(net.parameters())}
            for name, net in nets.items()
        ]
        return optimizers_for(self, self._optimizer_factory, self._scheduler_factory, groups)

    def training_step(self, batch: GroupedBatch, batch_idx: int) -> dict[str, Any]:
        """One manual step of every network; returns DC-IGN's loss (``loss``) and each network's
        posterior means of the step's groups (``codes``, ``[G, S, D]`` by network name), from
        which the scoring callback picks an entangled network's latents per factor without
        encoding the groups a second time."""
        opt = self.optimizers()
        logging_step = self._logging_step(batch_idx)
        if logging_step:
            self._log_learning_rates(opt.optimizer)
        parts = self.network_losses(batch)
        total = torch.stack([part.total for part in parts.values()]).sum()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        if self._gradients_finite(batch_idx):
            self._clip_gradients()
            opt.step()
            self._step_schedulers()
        else:
            opt.zero_grad(set_to_none=True)
        if logging_step:
            for name, network_parts in parts.items():
                self._log_parts("train", name, network_parts, on_step=True)
            self._log_group_types(parts["dcign"], batch)
        codes = {name: network_parts.codes for name, network_parts in parts.items()}
        return {"loss": parts["dcign"].total.detach(), "codes": codes}

    def _clip_gradients(self) -> None:
        """Clip each network's gradient norm to ``gradient_clip_val`` on its own."""
        clip = self.step_options.gradient_clip_val
        if clip:
            for net in self.networks.values():
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)

    def _logging_step(self, batch_idx: int) -> bool:
        """Whether this step's losses reach the loggers (every ``log_every_n_steps`` batches).

        Logging only the steps the loggers write, without epoch means of training losses,
        keeps Lightning's per-call bookkeeping (a few milliseconds per step for a dozen
        scalars, several percent of a small network's step) off the other steps.
        """
        every = self.trainer.log_every_n_steps if self._trainer else 1
        return (batch_idx + 1) % max(1, every) == 0

    def _gradients_finite(self, batch_idx: int) -> bool:
        """Whether this step's gradients are finite; stops the run or counts a skip if not.

        The check reads the gradients after backward, when DDP has already averaged them, so
        every rank sees the same verdict and takes the same branch without a collective of its
        own (a non-finite loss on one rank makes everyone's averaged gradient non-finite). It
        costs one device synchronisation per step. It sums each gradient in float32 (half
        the cost of a norm): the total is non-finite when any entry is (inf - inf is NaN), and
        float32 keeps half-precision gradients from overflowing. The update is never applied,
        so no checkpoint can hold the non-finite weights it would produce.
        """
        grads = [p.grad for p in self._stepped or self.parameters() if p.grad is not None]
        sums = [g.sum(dtype=torch.float32) for g in grads]
        if not sums or bool(torch.stack(sums).sum().isfinite()):
            return True
        if self.step_options.nonfinite == "skip":
            self.skipped_steps += 1
            log.warning(
                "Skipped step %d (epoch %d, batch %d): non-finite gradients (%d skipped so far)",
                self.global_step,
                self.current_epoch,
                batch_idx,
                self.skipped_steps,
            )
            self.log("train/skipped_steps", float(self.skipped_steps), on_step=True)
            return False
        raise RunStoppedError(
            f"The loss or its gradients became non-finite at step {self.global_step} (epoch "
            f"{self.current_epoch}, batch {batch_idx}); the update was not applied. Lower the "
            "learning rate (model.optimizer.lr), clip gradients (runtime.gradient_clip_val=1.0), "
            "or skip such steps with runtime.nonfinite=skip, then resume with ckpt_path=last."
        )

    def _step_schedulers(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
            hold_unscheduled(scheduler.optimizer)

    def validation_step(self, batch: GroupedBatch, batch_idx: int) -> None:
        self._log_objective("val", batch)

    def test_step(self, batch: GroupedBatch, batch_idx: int) -> None:
        self._log_objective("test", batch)

    def _log_objective(self, stage: str, batch: GroupedBatch) -> None:
        """Every network's objective at the posterior mean (deterministic)."""
        for name, parts in self.network_losses(batch, deterministic=True).items():
            self._log_parts(stage, name, parts, on_step=False, batch_size=batch.num_images)

    def _log_parts(
        self,
        stage: str,
        network: str,
        parts: LossParts,
        on_step: bool,
        batch_size: int | None = None,
    ) -> None:
        """A network's loss terms under ``stage/`` (DC-IGN) or ``stage/<network>/``."""
        prefix = stage if network == "dcign" else f"{stage}/{network}"
        values = {
            f"{prefix}/loss": parts.total,
            f"{prefix}/reconstruction": parts.reconstruction,
            f"{prefix}/kl": parts.kl,
        }
        if parts.invariance is not None:
            values[f"{prefix}/invariance"] = parts.invariance
        if parts.pose is not None:
            values[f"{prefix}/pose_error"] = parts.pose
        if parts.contrast is not None:
            values[f"{prefix}/contrast"] = parts.contrast
        if parts.detail is not None:
            values[f"{prefix}/detail"] = parts.detail
        self.log_dict(
            {key: value.detach() for key, value in values.items()},
            on_step=on_step,
            on_epoch=not on_step,
            prog_bar=False,
            sync_dist=not on_step,
            batch_size=batch_size,
        )

    def _log_learning_rates(self, optimizer: torch.optim.Optimizer) -> None:
        """The rate each network's update of this step uses (``train/lr``,
        ``train/<network>/lr``): the dashboard shows the schedule each network trained on."""
        groups = zip(self.networks, optimizer.param_groups, strict=True)
        rates = {
            ("train" if name == "dcign" else f"train/{name}") + "/lr": float(group["lr"])
            for name, group in groups
        }
        self.log_dict(rates, on_step=True, on_epoch=False, prog_bar=False)

    def _log_group_types(self, parts: LossParts, batch: GroupedBatch) -> None:
        """Mean negative ELBO per group type present in this batch (per-rank, no collective)."""
        group_type = batch.group_type
        num_types = self.active_masks.shape[0]
        sums = torch.zeros(num_types, device=group_type.device).index_add_(
            0, group_type, parts.per_group.float()
        )
        counts = torch.bincount(group_type, minlength=num_types)
        for type_id in batch.types_present():
            self.log(
                f"train/loss_by_type/{self._layout.names[type_id]}",
                sums[type_id] / counts[type_id],
                on_step=True,
                on_epoch=False,
            )
