"""The training objectives, one class each, chosen with ``model/objective=<name>``.

:mod:`~dcign.model.objectives.base` holds what they share (the ELBO's options, plain SGVB for
the baseline); :mod:`~dcign.model.objectives.dcign` DC-IGN's clamping and invariance targeting;
:mod:`~dcign.model.objectives.group` the group posteriors of ML-VAE, GVAE and Ada-GVAE. Each
class's config node is ``conf/model/objective/<name>.yaml`` (docs/training.md, "Adding an
objective").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hydra.utils import get_object

# Checkpoints written while one class held every objective name it, with ``method`` choosing.
LEGACY_TARGET = "dcign.model.objective.ObjectiveConfig"
LEGACY_METHODS = {
    "dcign": "dcign.model.objectives.dcign.DCIGNObjective",
    "mlvae": "dcign.model.objectives.group.MLVAEObjective",
    "gvae": "dcign.model.objectives.group.GVAEObjective",
    "adagvae": "dcign.model.objectives.group.AdaGVAEObjective",
}


def objective_node(node: Mapping[str, Any]) -> dict[str, Any]:
    """``node`` as today's config node of its objective.

    A checkpoint of the single-class form becomes its method's class with the options that class
    reads (that form stored every option for every method, and the others were ignored).
    """
    if node.get("_target_") != LEGACY_TARGET:
        return dict(node)
    target = LEGACY_METHODS[node.get("method", "dcign")]
    options = {field.name for field in dataclasses.fields(get_object(target))}
    return {"_target_": target, **{key: value for key, value in node.items() if key in options}}
