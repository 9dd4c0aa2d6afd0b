"""Shared fixtures: compose configs the way Hydra does, and keep every test's outputs in its tmp_path."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from slr.app.schema import CONF_DIR


@pytest.fixture(autouse=True)
def _outputs_in_tmp(tmp_path, monkeypatch):
    """Runs that fall back on the default outputs/ folder land in the test's tmp_path instead."""
    monkeypatch.setenv("SLR_OUTPUTS", str(tmp_path / "outputs"))


@pytest.fixture(autouse=True, scope="session")
def _kernel_cache_in_tmp(tmp_path_factory):
    """The compiled reduced-SGD kernel is built once per test session into a temporary folder (not ~/.cache)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SLR_CACHE_DIR", str(tmp_path_factory.mktemp("kernel-cache")))
    yield
    mp.undo()


@pytest.fixture
def make_cfg():
    """``make_cfg("task.d=10", "train=pgd", ...)`` -> the composed DictConfig (no Hydra job is started);
    ``config_name="slr_landscape"`` composes slr-landscape's config."""

    def _make(*overrides: str, config_name: str = "config"):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides))

    return _make
