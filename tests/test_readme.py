"""Every `python train.py` and `python -m dcign.evaluate` command in README.md and docs/*.md
composes with the real config, and the train commands pass the start-up config check.

Commands are taken from fenced ```bash blocks. Lines with placeholders (`...`, `<run>`) and
commands that need optional extras (`hparams_search=`, `launcher=`) are skipped; for a sweep
(`a=1,2`) only the first value is checked.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dcign.run.config_check import check_sections
from dcign.run.training import CHECKED_SECTIONS
from tests.conftest import CONF, ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

QUICK_START = (
    "python3.11 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
    "pip install -e . && python train.py",
    "python3.11 -m venv .venv && . .venv/bin/activate && pip install -q torch==2.13.0 && "
    'pip install -q -e ".[dev]" && python -m pytest -q',
)

TRAIN = ("python", "train.py")
EVALUATE = ("python", "-m", "dcign.evaluate")
EVALUATE_SCRIPT = ("python", "eval.py")
# Hydra's command-line flags that take a value (`--cfg job`), as opposed to overrides.
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i"}
NEEDS_EXTRAS = ("hparams_search=", "launcher=")


def bash_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number of the first line, text) of each fenced ```bash block in ``path``."""
    blocks, current, start = [], None, 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if current is None and stripped == "```bash":
            current, start = [], number + 1
        elif current is not None and stripped.startswith("```"):
            blocks.append((start, "\n".join(current)))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def logical_lines(start: int, text: str) -> list[tuple[int, str]]:
    """Lines of a block with backslash continuations joined, each with its first line number."""
    lines, pending, first = [], "", start
    for offset, line in enumerate(text.splitlines()):
        if not pending:
            first = start + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((first, pending + line))
        pending = ""
    if pending:
        lines.append((first, pending))
    return lines


def commands(line: str) -> list[list[str]]:
    """The commands of one shell line (split on `&&`, comments dropped) as token lists."""
    tokens = shlex.split(line, comments=True)
    result, current = [], []
    for token in tokens:
        if token == "&&":
            result.append(current)
            current = []
        else:
            current.append(token)
    result.append(current)
    return [command for command in result if command]


def first_sweep_value(override: str) -> str:
    """``key=a,b,c`` -> ``key=a``; commas inside brackets, braces or parentheses are kept."""
    key, sep, value = override.partition("=")
    if not sep:
        return override
    depth = 0
    for i, char in enumerate(value):
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            return f"{key}={value[:i]}"
    return override


def hydra_overrides(arguments: list[str]) -> list[str]:
    """Command-line arguments without Hydra's flags (`-m`, `--cfg job`), first sweep values."""
    overrides, skip_value = [], False
    for argument in arguments:
        if argument.startswith("-"):
            skip_value = argument in FLAGS_WITH_VALUE
            continue
        if skip_value and "=" not in argument:
            skip_value = False
            continue
        skip_value = False
        overrides.append(first_sweep_value(argument))
    return overrides


def documented_commands() -> list[pytest.param]:
    params = []
    for path in PAGES:
        name = path.relative_to(ROOT).as_posix()
        for start, block in bash_blocks(path):
            for number, line in logical_lines(start, block):
                for tokens in commands(line):
                    if tuple(tokens[:3]) == EVALUATE or tuple(tokens[:2]) == EVALUATE_SCRIPT:
                        entry = "eval"
                        arguments = tokens[3:] if tokens[1] == "-m" else tokens[2:]
                        # The checkpoint path is a placeholder; any string composes.
                        arguments = [
                            "ckpt_path=last.ckpt" if a.startswith("ckpt_path=") else a
                            for a in arguments
                        ]
                    elif tuple(tokens[:2]) == TRAIN:
                        entry, arguments = "train", tokens[2:]
                    else:
                        continue
                    text = shlex.join(tokens)
                    checked = shlex.join(arguments)
                    if "..." in checked or "<" in checked:
                        continue
                    if any(marker in checked for marker in NEEDS_EXTRAS):
                        continue
                    params.append(
                        pytest.param(entry, arguments, text, id=f"{name}:{number} {text}")
                    )
    return params


COMMANDS = documented_commands()


def test_enough_commands_are_checked():
    assert len(COMMANDS) >= 10, [param.values[2] for param in COMMANDS]


def test_quick_start_is_the_first_two_bash_blocks():
    blocks = [text.strip() for _, text in bash_blocks(README)]
    assert tuple(blocks[:2]) == QUICK_START


def check_command(entry: str, arguments: list[str], output_dir: Path) -> None:
    """Compose the command's config as its entry point would; check a train config's targets."""
    overrides = hydra_overrides(arguments)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        if entry == "train":
            # `${hydra:runtime.output_dir}` exists only under @hydra.main.
            cfg = compose(
                config_name="train", overrides=[*overrides, f"paths.output_dir={output_dir}"]
            )
            check_sections(OmegaConf.to_container(cfg, resolve=True), CHECKED_SECTIONS)
        else:
            compose(config_name="eval", overrides=overrides)


@pytest.mark.parametrize(("entry", "arguments", "command"), COMMANDS)
def test_documented_command_composes(entry, arguments, command, tmp_path):
    try:
        check_command(entry, arguments, tmp_path)
    except Exception as error:  # noqa: BLE001 - any failure means the documented command is wrong
        pytest.fail(f"documented command fails: {command}\n{type(error).__name__}: {error}")


@pytest.mark.parametrize(
    ("entry", "arguments"),
    [
        ("train", ["+model.invariance_wieght=0.1"]),  # composes, refused by the config check
        ("train", ["model.net.latent_dim=abc"]),
        ("train", ["dataset=cars"]),
        ("eval", ["ckpt_path=last.ckpt", "batches=100"]),
    ],
)
def test_a_wrong_command_is_caught(entry, arguments, tmp_path):
    with pytest.raises(Exception):  # noqa: B017 - composition and check raise different types
        check_command(entry, arguments, tmp_path)


def test_overrides_are_extracted_as_hydra_sees_them():
    line = (
        "python train.py -m model.objective.invariance_weight=0.1,1.0 "
        "model.net.encoder_filters=[32,64] --cfg job '+model.layout={a: 1, b: null}'"
        "  # comment, with a=1,2"
    )
    (tokens,) = commands(line)
    assert hydra_overrides(tokens[2:]) == [
        "model.objective.invariance_weight=0.1",
        "model.net.encoder_filters=[32,64]",
        "+model.layout={a: 1, b: null}",
    ]
    assert logical_lines(1, "a \\\n b\nc") == [(1, "a   b"), (3, "c")]
