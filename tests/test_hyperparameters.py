"""Checkpoints of earlier versions (flat model options) load as today's nested config."""

from __future__ import annotations

import torch

from dcign.model.hyperparameters import nested_hyperparameters
from dcign.model.module import DCIGN

LAYOUT = {"azimuth": 1, "elevation": 1, "light": 1, "intrinsic": None}
# Hyper-parameters as the flat DCIGN(...) of earlier versions saved them.
FLAT = {
    "layout": LAYOUT,
    "latent_dim": 8,
    "method": "dcign",
    "image_size": 16,
    "channels": 1,
    "encoder_filters": [4, 4],
    "encoder_kernel": 3,
    "decoder_filters": [4, 4],
    "decoder_kernel": 3,
    "invariance_weight": 1.0,
    "beta": 0.25,
    "likelihood": "bernoulli",
    "gaussian_sigma": 0.1,
    "reduction": "mean",
    "clamp_target": "partner",
    "clamp_stage": "sample",
    "clamp_gradient": "decoder",
    "kl_on_clamped": False,
    "baseline": True,
    "baseline_beta": 1.0,
    "optimizer": {"name": "adam", "lr": 0.001, "betas": [0.9, 0.99], "fused": True},
    "scheduler": {"name": "cosine", "min_lr": 1e-5},
    "gradient_clip_val": None,
    "compile": False,
    "channels_last": True,
    "scores_preset": "fast",
    "noise_seed": 0,
    "nonfinite": "stop",
}


def test_flat_options_land_in_their_nodes():
    nested = nested_hyperparameters(FLAT)
    assert nested["net"] == {
        "_target_": "dcign.model.networks.Architecture",
        "image_size": 16,
        "channels": 1,
        "latent_dim": 8,
        "encoder_filters": [4, 4],
        "encoder_kernel": 3,
        "decoder_filters": [4, 4],
        "decoder_kernel": 3,
    }
    assert nested["objective"]["beta"] == 0.25 and nested["objective"]["clamp_target"] == "partner"
    assert nested["baseline"] == {"beta": 1.0}
    assert nested["optimizer"] == {
        "_target_": "torch.optim.Adam",
        "_partial_": True,
        "lr": 0.001,
        "betas": [0.9, 0.99],
        "fused": True,
    }
    assert nested["scheduler"]["_target_"] == "torch.optim.lr_scheduler.CosineAnnealingLR"
    assert nested["scheduler"]["eta_min"] == 1e-5 and nested["scheduler"]["T_max"] is None
    assert nested["layout"] == LAYOUT and nested["nonfinite"] == "stop"
    assert nested_hyperparameters({**FLAT, "baseline": False})["baseline"] is None
    assert nested_hyperparameters(nested) == nested  # today's form passes through


def test_a_flat_checkpoint_loads_with_its_weights():
    model = DCIGN(**nested_hyperparameters(FLAT))
    checkpoint = {"hyper_parameters": FLAT, "state_dict": model.state_dict()}
    loaded = DCIGN.from_checkpoint(checkpoint)
    assert loaded.objective.beta == 0.25 and loaded.baseline_objective.beta == 1.0
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
