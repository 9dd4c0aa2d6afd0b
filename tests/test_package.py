"""slr as an installed package: a wheel built from this checkout carries its configs and the C kernel source, and its
commands work from a directory outside any checkout, writing runs under that directory's ``outputs/``.

The wheel is installed without dependencies into a fresh virtual environment that sees the test environment's
packages (torch is not installed again): the environment is created with ``--system-site-packages`` and a ``.pth``
line naming the test environment's site-packages (when the tests run in a virtual environment, its own packages are
not the "system" ones). Only the path is added, the ``.pth`` files found there are not run, so the editable install of
the checkout stays invisible and ``import slr`` finds the wheel's copy (checked).
"""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from slr import __version__

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
TINY = ["task.d=6", "task.L=3", "train.steps=20", "train.log_every=10", "train.repeats=2", "eval.n_test=400",
        "eval.bayes_is=1000"]


def _run(cmd, cwd, env, timeout=300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the wheel from a copy of the checkout, install it into a fresh environment; return paths and env."""
    tmp = tmp_path_factory.mktemp("package")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "outputs", "build", "dist", "*.egg-info",
                                                             "__pycache__", ".pytest_cache", ".benchmarks"))
    env = {k: v for k, v in os.environ.items() if k not in ("SLR_OUTPUTS", "PYTHONPATH")}
    env.update(CI="true", SLR_CACHE_DIR=str(tmp / "cache"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", src],
         tmp, env)
    (wheel,) = (tmp / "dist").glob("slr-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], tmp, env)
    (purelib,) = venv.glob("lib/python*/site-packages")
    (purelib / "test-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index", "-q",
          wheel], tmp, env)
    work = tmp / "elsewhere"  # an empty folder outside any checkout
    work.mkdir()
    return dict(wheel=wheel, bin=venv / "bin", work=work, env=env, cache=tmp / "cache")


def test_the_wheel_carries_the_configs_and_the_kernel_source(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    configs = {"slr/" + str(p.relative_to(REPO)) for p in (REPO / "conf").rglob("*.yaml")}  # conf/ ships as slr/conf
    assert configs and configs <= names, sorted(configs - names)
    sources = {str(p.relative_to(REPO)) for p in (REPO / "slr").rglob("*.c")}
    assert {"slr/training/kernels/reduced_step.c", "slr/training/kernels/pgd_step.c"} <= sources <= names
    assert not any(n.startswith(("tests/", "scripts/", "docs/")) for n in names)


def test_installed_slr_is_the_wheel_and_knows_its_version(installed):
    b, env, work = installed["bin"], installed["env"], installed["work"]
    where = _run([b / "python", "-c", "import slr; print(slr.__file__)"], work, env).stdout.strip()
    assert str(REPO) not in where and "site-packages" in where
    assert _run([b / "slr", "--version"], work, env).stdout.strip() == f"slr {__version__}"


def test_a_run_from_another_directory_lands_in_its_outputs(installed):
    b, env, work = installed["bin"], installed["env"], installed["work"]
    _run([b / "slr", *TINY, "train.simulator=reduced", "train.steps=50"], work, env)
    (run_dir,) = (work / "outputs" / "runs").glob("*/*")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["trained"]["steps_done"] == 50
    assert (run_dir / "metrics.csv").stat().st_size > 0 and (run_dir / ".hydra" / "config.yaml").is_file()
    assert list(installed["cache"].glob("reduced_step-*.so")), "the kernel source did not compile into the cache"
    assert summary["trained"]["kernel"] == "compiled"
    report = _run([b / "slr-report", run_dir], work, env).stdout
    assert "status: ok" in report and "trained erf attention" in report


def test_every_preset_and_launcher_composes_from_the_wheel(installed):
    b, env, work = installed["bin"], installed["env"], installed["work"]
    out = _run([b / "slr", "--cfg", "job", "experiment=paper_gd_manifold"], work, env).stdout
    assert "name: paper_gd_manifold" in out and "d: 400" in out
    script = """
from hydra import compose, initialize_config_dir
import slr.app.config
from slr.app.config import check
from slr.app.schema import CONF_DIR
assert "site-packages" in str(CONF_DIR), CONF_DIR
presets = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
launchers = ["basic", "joblib", "submitit_local", "submitit_slurm", "slurm"]
with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
    for p in presets:
        check(compose(config_name="config", overrides=[f"experiment={p}"]))
    for l in launchers:
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={l}"], return_hydra_config=True)
        assert cfg.hydra.launcher._target_, l
print(len(presets), "presets", len(launchers), "launchers")
"""
    n_presets = len(list((REPO / "conf" / "experiment").glob("*.yaml")))
    assert f"{n_presets} presets 5 launchers" in _run([b / "python", "-c", script], work, env).stdout
    sweep = work / "sweep"
    _run([b / "slr", "-m", *TINY, "figures=false", "seed=0,1", "hydra/launcher=joblib", f"hydra.sweep.dir={sweep}"],
         work, env)
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    assert len(summaries) == 2 and all(s["status"] == "ok" for s in summaries)
    # the analysis commands of the wheel, on that sweep, from outside any checkout
    out = _run([b / "slr-compare", sweep], work, env).stdout
    assert "ratio of excess risk to the Bayes excess risk" in out or "excess risk" in out
    assert (sweep / "figures" / "compare_bayes.png").stat().st_size > 10_000
    assert (sweep / "figures" / "compare_bayes.csv").is_file()
    _run([b / "slr-aggregate", sweep], work, env)
    assert (sweep / "summary.csv").read_text().count("\n") == 3  # header and two jobs
    assert "2 jobs (2 ok)" in _run([b / "slr-report", sweep], work, env).stdout


def test_the_wheel_declares_ranges_not_pins(installed):
    """A wheel that pins exact versions would downgrade or upgrade what a user has: its metadata holds ranges, and
    the analysis commands are among its console scripts."""
    from email.parser import Parser

    from packaging.requirements import Requirement

    with zipfile.ZipFile(installed["wheel"]) as z:
        read = {n.rsplit("/", 1)[-1]: n for n in z.namelist() if ".dist-info/" in n}
        meta = Parser().parsestr(z.read(read["METADATA"]).decode())
        entry_points = z.read(read["entry_points.txt"]).decode()
    reqs = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    assert {"torch", "numpy", "scipy", "pandas", "hydra-core", "tensorboard"} <= {r.name.lower() for r in reqs}
    assert not [str(r) for r in reqs if any(s.operator == "==" for s in r.specifier)]
    assert all(f"{c} =" in entry_points for c in ("slr", "slr-report", "slr-compare", "slr-aggregate", "slr-landscape"))
