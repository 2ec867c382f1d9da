"""The scores of every network of a run on its validation and test groups, as a callback.

The LightningModule trains and logs its objective; what the networks are worth beyond the
objective (novel views, equivariance, disentanglement: docs/evaluation.md) is kept here, so the
module needs no part of :mod:`dcign.scoring` and every trainer that fits or evaluates a DC-IGN
scores it the same way by carrying this callback (:func:`scoring_callbacks`).

It reads the module only through :class:`~dcign.model.interface.ScoredModel`. Each network has
its :class:`~dcign.scoring.network_metrics.NetworkMetrics`; an entangled network (the
baseline) is scored with the latents per factor chosen, at the start of each evaluation, on the
training groups seen since the previous one (the codes each training step returns) or, before
evaluating a checkpoint, on another split (:mod:`dcign.scoring.comparison_latents`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytorch_lightning as pl
import torch

from dcign.batch import GroupedBatch
from dcign.errors import ConfigError
from dcign.model.interface import ScoredModel
from dcign.scoring.network_metrics import COLLAPSED_BELOW, FactorInfo, NetworkMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")


class NetworkScores(pl.Callback):
    """Every network's metrics on ``val`` and ``test``, logged as ``<stage>/<metric>`` (DC-IGN)
    and ``<stage>/<network>/<metric>``.

    ``factors`` are the data's (``FactorSpec.to_dict()`` forms); ``scores_preset`` chooses the
    disentanglement scores' sample counts (``fast``, ``default``) or switches them off (None).
    During training they are computed at the validation of every ``every_n_epochs``-th epoch
    and of the last one, and at every test: even the fast preset's classifiers (a boosted tree
    ensemble per factor, for DCI) cost more than the rest of a validation, so scoring them at
    every epoch would more than double a short run.
    """

    def __init__(
        self,
        factors: Sequence[Mapping[str, Any]],
        scores_preset: str | None = "fast",
        every_n_epochs: int = 5,
    ) -> None:
        if (
            isinstance(every_n_epochs, bool)
            or not isinstance(every_n_epochs, int)
            or every_n_epochs < 1
        ):
            raise ConfigError(
                f"scores_every_n_epochs must be an integer >= 1, got {every_n_epochs!r}."
            )
        self.every_n_epochs = every_n_epochs
        self.factors = [
            FactorInfo(f["name"], column, bool(f["periodic"]), tuple(f["values"]))
            for column, f in enumerate(factors)
        ]
        self.scores_preset = scores_preset
        self.metrics: torch.nn.ModuleDict | None = None
        # Each network's code_use at the last evaluation, to tell a collapse from a slow start.
        self._code_use_seen: dict[str, float] = {}

    def attach(self, model: ScoredModel) -> torch.nn.ModuleDict:
        """The metrics of ``model``'s networks, built on first use and kept (with the latents
        chosen for the entangled networks) for every later evaluation of the run."""
        if self.metrics is None:
            layout = model.latent_layout
            entangled = model.entangled_networks
            self.metrics = torch.nn.ModuleDict(
                {
                    name: NetworkMetrics(
                        layout,
                        self.factors,
                        entangled=name in entangled,
                        angles=model.angle_factors.get(name, ()),
                    )
                    for name in model.networks
                }
            )
        # Moving the metrics walks every state of every metric (about a millisecond of Python),
        # and the training hook attaches at every step: move them only when the model moved.
        # Every network's metrics hold a buffer, so where the first one lies is where they are.
        if next(self.metrics.buffers()).device != model.device:
            self.metrics.to(model.device)
        return self.metrics

    @torch.no_grad()
    def observe_for_selection(self, model: ScoredModel, batch: GroupedBatch) -> None:
        """Encode ``batch`` with every entangled network to choose its factors' latents from
        (``dcign.evaluate`` feeds the validation split before scoring the test split)."""
        for name, metrics in self.attach(model).items():
            if metrics.selection is not None:
                x = batch.images
                mu, _ = model.networks[name].encode(x.flatten(0, 1))
                metrics.selection.observe(mu.view(*x.shape[:2], -1), batch.group_type)

    def choose_latents(self) -> dict[str, torch.Tensor | None]:
        """Fix each entangled network's latents per group type (``[T, D]``) from what was
        observed since the last choice; None for a network with none chosen yet."""
        return {
            name: metrics.selection.choose()
            for name, metrics in (self.metrics or {}).items()
            if metrics.selection is not None
        }

    # ----------------------------------------------------------------- Lightning hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: ScoredModel) -> None:
        self.attach(pl_module)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: ScoredModel,
        outputs: Mapping[str, Any],
        batch: GroupedBatch,
        batch_idx: int,
    ) -> None:
        """Feed the step's codes to the latent selection of every entangled network."""
        for name, metrics in self.attach(pl_module).items():
            if metrics.selection is not None and name in outputs["codes"]:
                metrics.selection.observe(outputs["codes"][name], batch.group_type)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: ScoredModel) -> None:
        self._start(trainer, pl_module)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: ScoredModel) -> None:
        self._start(trainer, pl_module)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: ScoredModel,
        outputs: Any,
        batch: GroupedBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Add ``batch`` to the running states of every network that can be scored (an
        entangled one needs its latents chosen), under the precision the step ran in."""
        with trainer.precision_plugin.forward_context():
            for name, metrics in self.attach(pl_module).items():
                if metrics.ready:
                    metrics.update(pl_module.networks[name], batch)

    on_test_batch_end = on_validation_batch_end

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module, "test")

    # ----------------------------------------------------------------- an evaluation
    def _start(self, trainer: pl.Trainer, pl_module: ScoredModel) -> None:
        """Fix the entangled networks' latents before scoring (warned once training runs)."""
        self.attach(pl_module)
        for name, chosen in self.choose_latents().items():
            if chosen is None and not trainer.sanity_checking:
                log.warning(
                    "The %s network's latents per factor are chosen on training or validation "
                    "groups seen before scoring, and none were seen: its metrics are left out "
                    "of this evaluation.",
                    name,
                )

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Compute (synchronised across ranks), log under ``stage/`` and reset.

        The networks' disentanglement scores run side by side, one thread each: they are
        scikit-learn's single-threaded classifiers, which release the interpreter lock, and
        took most of a scoring validation while the second core stood idle.
        """
        metrics = self.attach(pl_module)
        if not trainer.sanity_checking:
            ready = {name: network for name, network in metrics.items() if network.ready}
            preset = self._preset_now(trainer, stage)
            values, scoring = {}, {}
            for name, network in ready.items():
                values[name] = network.measures()
                if preset:
                    scoring[name] = network.scoring(preset, seed=0)
            for name, scores in run_side_by_side(scoring).items():
                values[name].update(scores)
            for name, network_values in values.items():
                prefix = stage if name == "dcign" else f"{stage}/{name}"
                self.report_collapse(stage, name, network_values["code_use"], trainer.current_epoch)
                # torchmetrics already reduced every value over the ranks, so all ranks hold
                # the same number and the mean Lightning takes is that number; it costs one
                # scalar all-reduce per key and validation.
                pl_module.log_dict(
                    {f"{prefix}/{key}": value for key, value in network_values.items()},
                    sync_dist=True,
                )
        for network in metrics.values():
            network.reset()

    def _preset_now(self, trainer: pl.Trainer, stage: str) -> str | None:
        """The disentanglement preset for this evaluation: every test, and the validations of
        every ``every_n_epochs``-th epoch and of the last one; None (skipped) otherwise."""
        epoch = trainer.current_epoch + 1
        due = stage != "val" or epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs
        return self.scores_preset if due else None

    def report_collapse(self, stage: str, network: str, code_use: float, epoch: int) -> None:
        """Warn when ``network``'s decodes barely depend on its code (``code_use`` below
        :data:`~dcign.scoring.network_metrics.COLLAPSED_BELOW`), so that its near-zero gains
        are never read as a result.

        A test warns at once. A validation warns only once the network has not recovered since
        the previous validation: every network starts near collapse, and a healthy one can
        still be below the line after its first epoch (the chairs: 0.08 after one epoch, 0.32
        after two), while a collapsed one stays there.
        """
        previous = self._code_use_seen.get(network)
        self._code_use_seen[network] = code_use
        if not code_use < COLLAPSED_BELOW:
            return
        if stage == "val" and (previous is None or code_use > previous):
            return
        log.warning(
            "The %s network is collapsed%s: its reconstructions reproduce %.1f%% of the images' "
            "variation (code_use %.3f < %.2f), so its decodes barely depend on the code and its "
            "novel-view gains are ~0. Lower its beta (model.objective.beta, "
            "model.baseline.beta) or change the likelihood.",
            network,
            f" at epoch {epoch} (not recovering since the last validation)"
            if stage == "val"
            else "",
            100 * code_use,
            code_use,
            COLLAPSED_BELOW,
        )


def scoring_callbacks(
    model: Any,
    factors: Sequence[Mapping[str, Any]],
    scores_preset: str | None,
    every_n_epochs: int,
) -> list[pl.Callback]:
    """The scoring callback a trainer of ``model`` carries: one for a model whose networks
    are scored (:class:`~dcign.model.interface.ScoredModel`: DC-IGN and its baseline), none
    for one that scores itself (a GQN)."""
    if not isinstance(model, ScoredModel):
        return []
    return [NetworkScores(factors, scores_preset, every_n_epochs)]


def run_side_by_side(work: Mapping[str, Callable[[], T]]) -> dict[str, T]:
    """Each call's result by name, the calls run on as many threads as torch may use (one
    call: on this thread); an error in any call is raised here."""
    workers = min(len(work), torch.get_num_threads())
    if workers <= 1:
        return {name: call() for name, call in work.items()}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scores") as pool:
        futures = {name: pool.submit(call) for name, call in work.items()}
        return {name: future.result() for name, future in futures.items()}
