"""Shared fixtures. Heavy ones are session-scoped: the 4-bit model loads once, the workbook runs once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def model_config():
    from helpers.config import ModelConfig

    return ModelConfig.from_profile("tiny")


@pytest.fixture(scope="session")
def tokenizer(model_config):
    from helpers.models import load_tokenizer

    return load_tokenizer(model_config)


@pytest.fixture(scope="session")
def model(model_config):
    from helpers.models import load_model

    return load_model(model_config)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The whole workbook executed headless on the tiny profile, once; yields its run folder."""
    from helpers.runner import run_workbook

    run_dir = tmp_path_factory.mktemp("workbook") / "tiny"
    os.environ["RLHF_HEADLESS"] = "1"
    run_workbook("tiny", run_dir)
    return run_dir
