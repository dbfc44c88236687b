"""Shared fixtures: tiny models of every family, built once per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tiny_models  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own activation cache and built-stimuli folders."""
    monkeypatch.setenv("TOPO_CACHE_DIR", str(tmp_path_factory.mktemp("topo-cache")))
    monkeypatch.setenv("TOPO_STIMULI_DIR", str(tmp_path_factory.mktemp("topo-stimuli")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Factory: path of a saved tiny model of the given family (built once per session)."""
    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = tiny_models.build(family, root / family)
        return built[family]

    return get


@pytest.fixture(scope="session")
def stimulus_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("stimuli")
    return {
        "text": tiny_models.write_text_set(root / "text"),
        "image": tiny_models.write_image_set(root / "image"),
        "audio": tiny_models.write_audio_set(root / "audio"),
    }
