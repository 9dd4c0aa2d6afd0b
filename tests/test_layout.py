"""Where runs land, and which way the package's modules import each other."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from slr.app.schema import checkout_root, outputs_dir

REPO = Path(__file__).resolve().parents[1]


def test_outputs_are_the_checkouts_inside_it_and_the_working_directorys_elsewhere(tmp_path, monkeypatch):
    monkeypatch.delenv("SLR_OUTPUTS", raising=False)
    monkeypatch.chdir(REPO / "conf" / "experiment")  # any depth inside the checkout
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
    code = "import sys, slr.core.task; print('slr.core.reduced' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# ----- the tree: conf/ at the top, subpackages, and which way they import -----------------------------------------
PACKAGE = REPO / "slr"


def _imports(path: Path) -> set[str]:
    """Every module a source file imports (top level and inside functions), as dotted names."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(REPO).with_suffix("").as_posix().replace("/", "."), _imports(path)


def test_the_configs_live_in_conf_at_the_top_and_the_checkout_reads_them_there():
    from slr.app.schema import CONF_DIR

    assert CONF_DIR == REPO / "conf" and (CONF_DIR / "config.yaml").is_file()
    assert not (PACKAGE / "conf").exists(), "configs have one source: conf/ at the top of the checkout"
    assert (CONF_DIR / "slr_landscape.yaml").is_file() and list((CONF_DIR / "experiment").glob("*.yaml"))


def test_the_wheel_lists_every_subpackage_and_ships_conf():
    import tomllib

    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {p.parent.relative_to(REPO).as_posix().replace("/", ".") for p in PACKAGE.rglob("__init__.py")}
    assert set(setup["packages"]) == packages | {"slr.conf"}
    assert setup["package-dir"] == {"slr.conf": "conf"}


def test_only_the_apps_import_hydra():
    offenders = [m for m, imps in _modules() if not m.startswith("slr.app.")
                 and any(i == "hydra" or i.startswith("hydra.") for i in imps)]
    assert not offenders, f"Hydra is imported outside slr.app: {offenders}"


def test_results_and_plots_never_import_torch():
    offenders = [m for m, imps in _modules() if m.startswith(("slr.results", "slr.plots"))
                 and any(i == "torch" or i.startswith("torch.") or i.startswith(("slr.core", "slr.training", "slr.models"))
                         for i in imps)]
    assert not offenders, f"results/plots import torch or torch-backed packages: {offenders}"
    code = "import sys, slr.results.report, slr.plots.dynamics, slr.plots.sweeps; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# the layers, bottom up: a module may import its own layer and those below it, never one above
LAYERS = [("slr.io", "slr.theory"), ("slr.core",), ("slr.training", "slr.models", "slr.landscape", "slr.text"),
          ("slr.results", "slr.plots"), ("slr.app",)]


def _layer(module: str) -> int | None:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def test_data_flows_one_way_through_the_layers():
    upward = []
    for module, imps in _modules():
        here = _layer(module)
        for imp in imps:
            there = _layer(imp)
            if here is not None and there is not None and there > here:
                upward.append(f"{module} -> {imp}")
    assert not upward, "imports that run up the layers: " + ", ".join(sorted(upward))


def test_no_two_modules_import_each_other():
    """No import cycle among slr's modules, lazy imports inside functions included: two modules that need each other
    are one idea split wrongly, or share a piece that wants its own file."""
    graph = {}
    for module, imps in _modules():
        graph[module] = {i for i in imps if i.startswith("slr.") and i != module}
    known = set(graph)
    graph = {m: {i if i in known else i.rsplit(".", 1)[0] for i in deps} & known - {m} for m, deps in graph.items()}
    packages = {m for m in known if (REPO / Path(*m.split("."))).is_dir()}  # __init__ re-exports are not cycles
    cycles = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            if a in graph.get(b, ()) and a < b and not {a, b} & packages:
                cycles.append(f"{a} <-> {b}")
    assert not cycles, "modules importing each other: " + ", ".join(cycles)
