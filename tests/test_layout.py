"""Where runs land, and which way the package's modules import each other."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from slr.config import checkout_root, outputs_dir

REPO = Path(__file__).resolve().parents[1]


def test_outputs_are_the_checkouts_inside_it_and_the_working_directorys_elsewhere(tmp_path, monkeypatch):
    monkeypatch.delenv("SLR_OUTPUTS", raising=False)
    monkeypatch.chdir(REPO / "slr" / "conf")  # any depth inside the checkout
    assert checkout_root() == REPO and outputs_dir() == str(REPO / "outputs")
    monkeypatch.chdir(tmp_path)
    assert checkout_root() is None and outputs_dir() == str(tmp_path.resolve() / "outputs")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\n')  # another project is not a checkout
    (tmp_path / "slr").mkdir()
    (tmp_path / "slr" / "__init__.py").write_text("")
    assert checkout_root() is None
    monkeypatch.setenv("SLR_OUTPUTS", str(tmp_path / "mine"))  # wins everywhere
    assert outputs_dir() == str(tmp_path / "mine")
    monkeypatch.chdir(REPO)
    assert outputs_dir() == str(tmp_path / "mine")


def test_data_flows_one_way_task_does_not_import_the_reduced_sampler():
    code = "import sys, slr.task; print('slr.reduced' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
