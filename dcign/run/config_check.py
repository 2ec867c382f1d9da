"""Config checking at start-up, typed by the constructors the config is for.

A mistyped key (``model.invariance_wieght=0.1`` added with ``+``, or a typo in a user's
experiment file) or a wrong type (``model.net.latent_dim=abc``) should stop a run before its data
is rendered, naming the key, not an hour later or deep inside a constructor. Every config node
with a ``_target_`` is checked against the signature of the class or function it builds: each
key must be one of its parameters (with a suggestion when it is close to one) and each value
must fit the parameter's type hint. The schema is the code itself, so it cannot drift from it
the way a hand-written copy of every option would.

A factory that forwards ``**options`` to one of several classes lists them in a
``config_classes`` attribute; its keys are checked against all of them together.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import inspect
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra.utils import get_object

from dcign.errors import ConfigError

_ANY = inspect.Parameter.empty


def check_sections(config: Mapping[str, Any], sections: Sequence[str]) -> None:
    """Check every target under ``sections`` of a resolved run config, before anything is built.

    A section is a target itself (``dataset``, ``model``, ``trainer``) or a mapping of named
    targets (``callbacks``, ``logger``; null entries are switched off).
    """
    for section in sections:
        node = config.get(section)
        if not isinstance(node, Mapping):
            continue
        if "_target_" in node:
            check_target(node, section)
            continue
        for name, child in node.items():
            if isinstance(child, Mapping) and "_target_" in child:
                check_target(child, f"{section}.{name}")


def check_target(config: Mapping[str, Any], where: str) -> None:
    """Check ``config`` (resolved plain containers) and its nested targets; ``where``: its key."""
    target = config.get("_target_")
    if not isinstance(target, str):
        return
    try:
        function = get_object(target)
    except Exception as error:  # noqa: BLE001 - any import failure means the same to the user
        raise ConfigError(
            f"{where}._target_={target!r} cannot be imported ({error}). Check the spelling of the "
            "class path, or that the package providing it is installed."
        ) from error
    options, open_ended = parameters(function)
    hints = {name: parameter.annotation for name, parameter in options.items()}
    for key, value in config.items():
        if key.startswith("_") and key.endswith("_"):
            continue  # Hydra's own keys: _target_, _partial_, _convert_, _recursive_, _args_
        name = f"{where}.{key}"
        if key not in hints:
            if open_ended:
                continue
            raise ConfigError(_unknown_key(name, key, target, hints))
        _check_value(value, hints[key], name)


def _check_value(value: Any, hint: Any, name: str) -> None:
    if isinstance(value, Mapping) and "_target_" in value:
        check_target(value, name)
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, Mapping) and "_target_" in item:
                check_target(item, f"{name}[{i}]")
    if not _fits(value, hint):
        raise ConfigError(
            f"{name} must be {_describe(hint)}, got {value!r} ({type(value).__name__}). "
            f"Example: {name}={_example(hint)}."
        )


def parameters(function: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool]:
    """The options of ``function`` by name (type hint and default), and whether it takes any
    keyword at all.

    A class's ``__init__`` that passes ``**kwargs`` on to its base class is followed up the
    MRO, so a subclass accepts its own options plus those of the class it extends (the first
    class to name an option gives its hint and default).
    """
    sources = getattr(function, "config_classes", None) or (function,)
    options: dict[str, inspect.Parameter] = {}
    open_ended = False
    for source in sources:
        more, rest = _own_and_inherited(source)
        options.update({k: v for k, v in more.items() if k not in options})
        open_ended = open_ended or rest
    return options, open_ended


def _own_and_inherited(function: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool]:
    chain = (
        [c.__init__ for c in function.__mro__ if "__init__" in vars(c) and c is not object]
        if isinstance(function, type)
        else [function]
    )
    options: dict[str, inspect.Parameter] = {}
    for callable_ in chain:
        signature = _signature(callable_).parameters.values()
        for parameter in signature:
            if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.VAR_POSITIONAL):
                continue
            if parameter.kind is not parameter.VAR_KEYWORD and parameter.name != "self":
                options.setdefault(parameter.name, parameter)
        if not any(p.kind is p.VAR_KEYWORD for p in signature):
            return options, False
    return options, bool(chain)  # a class with no __init__ of its own takes no options


def _signature(function: Callable[..., Any]) -> inspect.Signature:
    """The signature with string annotations evaluated where possible (else left as Any).

    A dataclass's ``__init__`` carries its inherited fields' annotations as strings that name
    types of the base class's module, so those are evaluated where each field was declared.
    """
    try:
        return inspect.signature(function, eval_str=True)
    except Exception:  # noqa: BLE001 - an annotation that cannot be evaluated is not checked
        signature = inspect.signature(function)
        hints = _field_hints(function)
        return signature.replace(
            parameters=[
                p.replace(annotation=hints.get(p.name, _ANY)) for p in signature.parameters.values()
            ]
        )


def _field_hints(function: Callable[..., Any]) -> dict[str, Any]:
    """The evaluated field types of the dataclass whose ``__init__`` is ``function``, if any."""
    owner = getattr(inspect.getmodule(function), function.__qualname__.rsplit(".", 1)[0], None)
    if not dataclasses.is_dataclass(owner):
        return {}
    try:
        return typing.get_type_hints(owner)
    except Exception:  # noqa: BLE001 - as above: unevaluated types are not checked
        return {}


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (a plain YAML value) can be passed where ``hint`` is expected."""
    if hint is _ANY or hint is Any or isinstance(hint, str | typing.TypeVar):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(_fits(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if value is None:
        # null means "not set": the constructor says what it needs (a data root, a file) in
        # its own words, better than "must be a string".
        return True
    if hint is type(None):
        return False
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is os.PathLike or hint is os.PathLike[str]:
        return isinstance(value, str)
    container = origin or hint
    if container in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            return False
        if container is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_fits, value, args))
        return all(_fits(v, args[0] if args else _ANY) for v in value)
    if container in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        if not isinstance(value, Mapping):
            return False
        key, item = args if len(args) == 2 else (_ANY, _ANY)
        return all(_fits(k, key) and _fits(v, item) for k, v in value.items())
    return True  # classes, callables, protocols: not a YAML value's business to match


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_describe(arg) for arg in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if hint is type(None):
        return "null"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    container = origin or hint
    if container in (list, tuple, collections.abc.Sequence):
        return "a list" + (f" of {_describe(args[0])}" if args else "")
    if container in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        kinds = f" of {_describe(args[0])} to {_describe(args[1])}" if len(args) == 2 else ""
        return "a mapping" + kinds
    return getattr(hint, "__name__", str(hint))


def _example(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return _example(next(arg for arg in args if arg is not type(None)))
    if origin is typing.Literal:
        return str(args[0])
    examples = {bool: "true", int: "3", float: "0.5", str: "text"}
    container = origin or hint
    if container in (list, tuple, collections.abc.Sequence):
        return "[1,2]"
    if container in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        # The item's own example, so that a mapping of lists is shown one (a: [1,2], not a: 1).
        item = _example(args[1]).strip("'") if len(args) == 2 else "1"
        return f"'{{a: {item}}}'"
    return examples.get(hint, "...")


def _unknown_key(name: str, key: str, target: str, hints: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(hints), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return (
        f"{name} is not an option of {target}.{hint} Its options are: {', '.join(sorted(hints))}."
    )
