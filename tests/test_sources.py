"""Checks on users' files: roots that are missing or of the wrong kind, and unreadable files."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

import datamodules.sources as sources
from datamodules.sources import LISTED, BadFiles, existing_path
from dcign.errors import ConfigError

EXPECTED = "a folder of <model>/renders/image_*.png"
EXAMPLE = "dataset.root=/data/chairs"


def check(path, is_dir=True):
    return existing_path(path, "dataset.root", EXPECTED, EXAMPLE, is_dir=is_dir)


@pytest.mark.parametrize("path", [None, ""])
def test_an_unset_path_says_what_it_should_point_to(path):
    with pytest.raises(ConfigError) as error:
        check(path)
    message = str(error.value)
    assert "dataset.root is not set" in message
    assert EXPECTED in message and EXAMPLE in message


def test_a_missing_path_is_named_with_the_expected_format(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.root='.*nowhere' does not exist.*renders"):
        check(tmp_path / "nowhere")


def test_a_file_is_not_a_folder_and_a_folder_is_not_a_file(tmp_path):
    (tmp_path / "file.csv").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        check(tmp_path / "file.csv")
    with pytest.raises(ConfigError, match="is not a file"):
        check(tmp_path, is_dir=False)
    assert check(tmp_path / "file.csv", is_dir=False) == tmp_path / "file.csv"


def test_relative_and_home_paths_become_absolute(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    assert check("data") == tmp_path / "data"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert check("~/data") == tmp_path / "data"


def test_a_relative_path_is_taken_from_where_the_program_started(tmp_path, monkeypatch):
    # With hydra.job.chdir=true the working directory is the run folder, not the user's.
    (tmp_path / "data").mkdir()
    run_dir = tmp_path / "outputs" / "run"
    run_dir.mkdir(parents=True)
    monkeypatch.chdir(run_dir)
    hydra = SimpleNamespace(runtime=SimpleNamespace(cwd=str(tmp_path)))
    monkeypatch.setattr(sources.HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(sources.HydraConfig, "get", staticmethod(lambda: hydra))
    assert check("data") == tmp_path / "data"
    with pytest.raises(ConfigError, match=r"'missing' \(.*missing\) does not exist"):
        check("missing")


def test_bad_files_stop_by_default_naming_the_file(tmp_path):
    cause = OSError("image file is truncated")
    with pytest.raises(ConfigError) as error:
        BadFiles(False, "image").handle(tmp_path / "a.png", cause)
    message = str(error.value)
    assert "a.png" in message and "image file is truncated" in message
    assert "dataset.skip_bad_files=true" in message
    assert error.value.__cause__ is cause


def test_skipped_files_are_counted_and_the_first_ones_listed(tmp_path, caplog):
    bad = BadFiles(True, "mesh")
    names = [tmp_path / f"{i}.obj" for i in range(LISTED + 5)]
    with caplog.at_level(logging.WARNING, logger=sources.__name__):
        for name in names:
            bad.handle(name, ValueError("broken"))
        summary = bad.summary()
    assert summary == {
        "skipped_files": LISTED + 5,
        "skipped_examples": [str(name) for name in names[:LISTED]],
    }
    messages = [record.getMessage() for record in caplog.records]
    assert sum("Skipping the unreadable mesh" in m for m in messages) == LISTED
    assert f"Skipped {LISTED + 5} unreadable mesh files" in messages[-1]


def test_nothing_skipped_reports_zero(caplog):
    with caplog.at_level(logging.WARNING, logger=sources.__name__):
        assert BadFiles(True, "image").summary() == {"skipped_files": 0, "skipped_examples": []}
    assert not caplog.records


@pytest.mark.parametrize("skip", ["yes", 1, None])
def test_skip_must_be_a_boolean(skip):
    with pytest.raises(ConfigError, match="dataset.skip_bad_files must be true or false"):
        BadFiles(skip, "image")
