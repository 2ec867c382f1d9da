"""Checkpoints written before the model's config was nested, read as nested ones.

Earlier versions stored every model option flat (``latent_dim``, ``beta``, ``baseline: true``,
``optimizer: {name: adam, lr: ...}``). Their weights are the same networks under the same
names, so they still evaluate, explore and resume: their hyper-parameters are rewritten into
the nested nodes (``net``, ``objective``, ``baseline``, ``optimizer``, ``scheduler``) that
:class:`~dcign.model.module.DCIGN` takes today. A nested set passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dcign.errors import ConfigError

NET_KEYS = (
    "image_size",
    "channels",
    "latent_dim",
    "encoder_filters",
    "encoder_kernel",
    "decoder_filters",
    "decoder_kernel",
)
OBJECTIVE_KEYS = (
    "method",
    "invariance_weight",
    "beta",
    "likelihood",
    "gaussian_sigma",
    "reduction",
    "clamp_target",
    "clamp_stage",
    "clamp_gradient",
    "kl_on_clamped",
)
OPTIMIZERS = {
    "adam": "torch.optim.Adam",
    "adamw": "torch.optim.AdamW",
    "rmsprop": "torch.optim.RMSprop",
    "sgd": "torch.optim.SGD",
}
# Options the module takes as they were.
KEPT = (
    "layout",
    "gradient_clip_val",
    "compile",
    "channels_last",
    "scores_preset",
    "noise_seed",
    "nonfinite",
)


def nested_hyperparameters(saved: Mapping[str, Any]) -> dict[str, Any]:
    """``saved`` in today's nested form (a copy; nested input is returned as it is)."""
    if "net" in saved or not saved:
        return dict(saved)
    nested: dict[str, Any] = {key: saved[key] for key in KEPT if key in saved}
    nested["net"] = {
        "_target_": "dcign.model.networks.Architecture",
        **{key: saved[key] for key in NET_KEYS if key in saved},
    }
    nested["objective"] = {
        "_target_": "dcign.model.objective.ObjectiveConfig",
        **{key: saved[key] for key in OBJECTIVE_KEYS if key in saved},
    }
    with_baseline = saved.get("baseline", True)
    nested["baseline"] = {"beta": saved.get("baseline_beta", 1.0)} if with_baseline else None
    nested["optimizer"] = _optimizer(saved.get("optimizer") or {})
    nested["scheduler"] = _scheduler(saved.get("scheduler") or {})
    return nested


def _optimizer(flat: Mapping[str, Any]) -> dict[str, Any]:
    options = dict(flat)
    name = str(options.pop("name", "adam")).lower()
    if name not in OPTIMIZERS:
        raise ConfigError(f"The checkpoint names an unknown optimizer {name!r}.")
    if name in ("adam", "adamw"):
        options.setdefault("betas", [0.9, 0.99])
    return {"_target_": OPTIMIZERS[name], "_partial_": True, "lr": 5e-4, **options}


def _scheduler(flat: Mapping[str, Any]) -> dict[str, Any] | None:
    name = str(flat.get("name", "none")).lower()
    if name == "cosine":
        return {
            "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "_partial_": True,
            "T_max": None,
            "eta_min": float(flat.get("min_lr", 0.0)),
        }
    if name == "step":
        return {
            "_target_": "torch.optim.lr_scheduler.StepLR",
            "_partial_": True,
            "step_size": int(flat.get("step_size", 1000)),
            "gamma": float(flat.get("gamma", 0.5)),
        }
    return None
