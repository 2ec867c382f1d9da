"""Whether a checkpoint's weights fit the model a run builds, said in config keys.

Lightning's strict state-dict load would list mismatched tensors; a user needs the settings
to change instead. Each model names the ``model.net`` keys its weights depend on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dcign.errors import ConfigError


def _canonical(value: Any) -> Any:
    """Lists and tuples compare equal; mappings compare by items (their order is the layout's)."""
    if isinstance(value, Mapping):
        return [(key, _canonical(item)) for key, item in value.items()]
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value


def weight_shape(hparams: Mapping[str, Any], net_keys: Mapping[str, Any]) -> dict[str, Any]:
    """What of the (nested) hyper-parameters a checkpoint's weights depend on, by config key:
    the network sizes (``net_keys`` of ``model.net``: each model names its own, with the value
    a key absent from older hyper-parameters stands for, so that adding an option does not
    make every earlier checkpoint incompatible), the latent layout and which networks there
    are."""
    net = hparams.get("net") or {}
    shape = {f"net.{key}": net.get(key, absent) for key, absent in net_keys.items()}
    shape["layout"] = hparams.get("layout")
    shape["baseline"] = "trained" if hparams.get("baseline") is not None else "none"
    return shape


def check_compatible(
    saved: Mapping[str, Any], current: Mapping[str, Any], net_keys: Mapping[str, Any]
) -> None:
    """Raise a ConfigError listing every architecture/layout setting that differs.

    Called from a module's ``on_load_checkpoint``, before Lightning's strict state-dict load,
    so that a user sees the settings to change instead of a list of mismatched tensors.
    """
    before, now = weight_shape(saved, net_keys), weight_shape(current, net_keys)
    differences = [
        f"model.{key}: checkpoint {before[key]!r}, this run {now[key]!r}"
        for key in before
        if _canonical(before[key]) != _canonical(now[key])
    ]
    if differences:
        raise ConfigError(
            "The checkpoint was trained with another model or latent layout: "
            + "; ".join(differences)
            + ". Resume with the settings it was trained with (the run's .hydra/config.yaml "
            "holds them), or start a new run without ckpt_path."
        )
