"""Shared fixtures: the data directory and a clean environment for Ray and MLflow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 turns token auth on when ~/.ray/auth_token exists
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _data_dir() -> Path | None:
    for candidate in (os.environ.get("ITT_DATA_DIR"), REPO / "data", REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "mbxp" / "metadata.json").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = _data_dir()
    if found is None:
        pytest.skip("no data directory: run `make data`")
    return found


@pytest.fixture()
def smoke_raw() -> dict:
    import yaml

    return yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
