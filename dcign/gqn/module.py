"""The Generative Query Network (Eslami et al., Science 2018) as a LightningModule.

It trains on the same factor-grouped batches as DC-IGN: a group in which only the view or the
light varies is a scene of one identity seen from known viewpoints (:mod:`dcign.gqn.scenes`).
Each step draws the number of context views M from 1..K, sums their representations into the
scene representation, and trains the ConvDRAW generator to draw every other view of the scene
from its viewpoint: the ELBO with a Gaussian pixel likelihood whose sigma is annealed (the
paper: 2.0 to 0.7), or, for the deterministic variant, the pixel loss alone. Groups in which the
identity varies are not scenes and are left out (``experiment=gqn`` sets their ratio to 0).

All randomness of a step (M, the order of the views, the latent noise) comes from a generator
seeded by ``(noise_seed, step)``, so a run killed and resumed trains exactly as one that was not.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import pytorch_lightning as pl
import torch

from dcign.batch import GroupedBatch
from dcign.errors import ConfigError
from dcign.gqn.networks import (
    WEIGHT_KEYS,
    Generator,
    GQNArchitecture,
    Representation,
    gaussian_nll,
    scene_representation,
    sigma_schedule,
)
from dcign.gqn.scenes import (
    Scenes,
    distinct_views,
    split_scenes,
    viewpoint_dim,
    viewpoint_factors,
    viewpoints,
)
from dcign.model.compatibility import check_compatible
from dcign.model.layout import INTRINSIC
from dcign.model.module import RUN_CONFIG_KEY
from dcign.model.noise import TrainingNoise
from dcign.model.optimization import COSINE_TO_ZERO, build_node, optimizers_for, run_steps

log = logging.getLogger(__name__)

# The pixel sigma's schedule (conf/model/gqn.yaml): the paper's 2.0 -> 0.7 over the first tenth
# of the run, then held; a given step count replaces the span.
SIGMA = MappingProxyType({"start": 2.0, "end": 0.7, "span": 0.1, "steps": None})

# Keys of the randomness: (stream, phase, index); training steps and evaluation batches apart.
SPLIT, LATENT = 0, 1
TRAIN, EVALUATE = 0, 1


class GQN(pl.LightningModule):
    """A GQN over grouped batches; ``factors`` are the data's (``FactorSpec.to_dict()`` forms)."""

    def __init__(
        self,
        net: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        layout: Mapping[str, int | None],
        factors: Sequence[Mapping[str, Any]],
        max_context: int = 5,
        sigma: Mapping[str, Any] = SIGMA,
        scheduler: Mapping[str, Any] | None = COSINE_TO_ZERO,
        eval_samples: int = 4,
        noise_seed: int = 0,
    ) -> None:
        super().__init__()
        sigma = {**SIGMA, **sigma}  # stored as a plain dict: hyper-parameters are pickled
        scheduler = None if scheduler is None else dict(scheduler)  # plain: pickled
        self.save_hyperparameters()
        self._viewpoint = viewpoint_factors(factors)
        arch: GQNArchitecture = build_node(
            {**net, "viewpoint_dim": viewpoint_dim(self._viewpoint)}, "model.net"
        )
        self.arch = arch
        self.representation = Representation(arch)
        self.generator = Generator(arch)
        # Group types that are scenes: every type but the one in which the identity varies.
        scenes = torch.tensor([name != INTRINSIC for name in layout], dtype=torch.bool)
        self.register_buffer("scene_types", scenes, persistent=False)
        if isinstance(max_context, bool) or not isinstance(max_context, int) or max_context < 1:
            raise ConfigError(f"model.max_context must be an integer >= 1, got {max_context!r}.")
        if eval_samples < 1:
            raise ConfigError(f"model.eval_samples must be >= 1, got {eval_samples!r}.")
        self.sigma = sigma
        if not 0.0 < float(self.sigma["span"]) <= 1.0:
            raise ConfigError(f"model.sigma.span must be in (0, 1], got {self.sigma['span']!r}.")
        self._anneal_steps: int | None = None
        self._optimizer_factory = build_node(optimizer, "model.optimizer")
        self._scheduler_factory = build_node(scheduler, "model.scheduler") if scheduler else None
        self._noise = TrainingNoise(noise_seed)
        self.run_config: dict[str, Any] | None = None

    # ----------------------------------------------------------------- rendering
    def viewpoints(self, factor_values: torch.Tensor) -> torch.Tensor:
        """Factor values ``[..., F]`` -> the viewpoint vectors this network is conditioned on."""
        return viewpoints(factor_values, self._viewpoint)

    def render_views(
        self,
        context_images: torch.Tensor,
        context_factors: torch.Tensor,
        query_factors: torch.Tensor,
        samples: int | None = None,
        seed: int = 0,
    ) -> torch.Tensor:
        """Views ``[B, Q, C, H, W]`` at ``query_factors [B, Q, F]`` of the scenes seen in
        ``context_images [B, M, C, H, W]``: the mean of ``samples`` draws from the prior (the
        deterministic variant has one answer)."""
        samples = samples or self.hparams.eval_samples
        queries = query_factors.shape[1]
        r_q = self._per_query(context_images, self.viewpoints(context_factors), queries)
        v_q = self.viewpoints(query_factors).flatten(0, 1)
        generator = torch.Generator(device=r_q.device).manual_seed(seed)
        draws = [self.generator.sample(r_q, v_q, generator) for _ in range(samples)]
        return torch.stack(draws).mean(0).unflatten(0, (len(query_factors), queries))

    def _per_query(
        self, context_images: torch.Tensor, context_views: torch.Tensor, queries: int
    ) -> torch.Tensor:
        """Each scene's representation (the sum over its context), once per query of it."""
        r = scene_representation(self.representation, context_images, context_views)
        return r.repeat_interleave(queries, dim=0)

    # ----------------------------------------------------------------- the objective
    def scene_loss(
        self, batch: GroupedBatch, key: tuple[int, int], sigma: float
    ) -> dict[str, torch.Tensor]:
        """Mean per-image negative ELBO (and its parts) over every query of the batch's scenes."""
        keep = self.scene_types[batch.group_type]
        if not bool(keep.any()):
            raise ConfigError(
                "A GQN batch held no scene (a group in which only the view or the light "
                "varies); give the view factors a positive dataset.ratio."
            )
        images, factors = batch.images[keep], batch.factors[keep]
        views = self.viewpoints(factors)
        generator = self._noise.generator(images.device, (SPLIT, *key))
        # Context views are distinct and at least one new view is left to query.
        most = min(self.hparams.max_context, distinct_views(views) - 1)
        context = int(torch.randint(1, most + 1, (1,), generator=generator, device=images.device))
        scenes = split_scenes(images, views, context, generator)
        mean, kl = self._draw(scenes, key)
        target = scenes.query_images.flatten(0, 1)
        nll = gaussian_nll(mean, target, sigma)
        new = scenes.query_new.flatten().float()
        count = new.sum()
        squared = (mean.float() - target.float()).square().flatten(1).mean(dim=1)
        return {
            "loss": ((nll + kl) * new).sum() / count,
            "nll": (nll * new).sum() / count,
            "kl": (kl * new).sum() / count,
            "mse": (squared * new).sum() / count,
            "context": torch.tensor(float(context)),
        }

    def _draw(self, scenes: Scenes, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        queries = scenes.query_images.shape[1]
        r_q = self._per_query(scenes.context_images, scenes.context_views, queries)
        target = scenes.query_images.flatten(0, 1)
        noise = None
        if self.arch.stochastic:
            grid = self.arch.grid
            shape = (self.arch.steps, target.shape[0], self.arch.z_dim, grid, grid)
            noise = list(self._noise.draw(shape, target.device, (LATENT, *key)))
        return self.generator(r_q, scenes.query_views.flatten(0, 1), target, noise=noise)

    def current_sigma(self) -> float:
        """The pixel sigma of this step: annealed from ``start`` to ``end`` over ``steps``
        batches, or (``steps`` null) over the first ``span`` of the run, then held at ``end``:
        the paper anneals over its first 200 k of 2 M steps, so ``span`` 0.1 keeps that shape
        in a run of any length."""
        if self._anneal_steps is None:  # the run's length is asked once, not every step
            self._anneal_steps = self.sigma["steps"] or max(
                1, round(float(self.sigma["span"]) * run_steps(self))
            )
        start, end = self.sigma["start"], self.sigma["end"]
        return sigma_schedule(self.global_step, start, end, self._anneal_steps)

    # ----------------------------------------------------------------- Lightning hooks
    def training_step(self, batch: GroupedBatch, batch_idx: int) -> torch.Tensor:
        sigma = self.current_sigma()
        parts = self.scene_loss(batch, self._step_key(), sigma)
        self.log_dict({f"train/{name}": value for name, value in parts.items()})
        self.log("train/sigma", sigma)
        return parts["loss"]

    def validation_step(self, batch: GroupedBatch, batch_idx: int) -> None:
        self._evaluate("val", batch, batch_idx)

    def test_step(self, batch: GroupedBatch, batch_idx: int) -> None:
        self._evaluate("test", batch, batch_idx)

    def _evaluate(self, stage: str, batch: GroupedBatch, batch_idx: int) -> None:
        """The ELBO at the final sigma on fixed splits (the same every validation)."""
        if not bool(self.scene_types[batch.group_type].any()):
            return
        parts = self.scene_loss(batch, (EVALUATE, batch_idx), float(self.sigma["end"]))
        parts.pop("context")
        self.log_dict(
            {f"{stage}/{name}": value for name, value in parts.items()},
            on_epoch=True,
            sync_dist=True,
            batch_size=batch.num_images,
        )

    def _step_key(self) -> tuple[int, int]:
        """The step's key for its randomness; ranks draw apart (their batches differ too)."""
        rank, world = (
            (self.trainer.global_rank, self.trainer.world_size) if self._trainer else (0, 1)
        )
        return (TRAIN, self.global_step * world + rank)

    def configure_optimizers(self) -> dict[str, Any]:
        groups = [{"params": list(self.parameters())}]
        return optimizers_for(self, self._optimizer_factory, self._scheduler_factory, groups)

    def on_fit_start(self) -> None:
        """Say so when a share of the batches is spent on groups a GQN cannot draw."""
        datamodule = getattr(self.trainer, "datamodule", None)
        share = getattr(datamodule, "ratio", {}).get(INTRINSIC, 0.0)
        if share > 0:
            log.warning(
                "dataset.ratio.%s is %s: those groups vary the identity, are not scenes and "
                "are skipped by the GQN (their batches are wasted). `experiment=gqn` sets it "
                "to 0.",
                INTRINSIC,
                share,
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_config is not None:
            checkpoint[RUN_CONFIG_KEY] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_compatible(checkpoint.get("hyper_parameters", {}), self.hparams, WEIGHT_KEYS)
        self.run_config = checkpoint.get(RUN_CONFIG_KEY)
