"""Dependencies: pyproject.toml declares compatible ranges, requirements.lock the exact versions of `make` and CI.

The lock must satisfy every range (else `make setup` would fail or install what the ranges exclude), pin every
direct dependency, and pin each package once, exactly."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirements() -> list[Requirement]:
    p = _project()
    return [Requirement(r) for r in [*p["dependencies"], *(r for rs in p["optional-dependencies"].values() for r in rs)]]


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert m, f"requirements.lock: {line!r} is not an exact pin name==version"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"requirements.lock pins {name} twice"
        pins[name] = Version(m.group(2))
    return pins


def test_the_lock_satisfies_every_range():
    pins = _lock()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"requirements.lock does not pin {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"


def test_every_dependency_is_a_range_with_a_tested_lower_and_a_major_upper_bound():
    """No exact pins in the package (they belong in the lock); every range has both bounds (setuptools, needed by
    the tests to build the wheel, only a lower one)."""
    for req in _requirements():
        ops = {s.operator for s in req.specifier}
        assert "==" not in ops, f"{req}: an exact pin in pyproject.toml (pins go in requirements.lock)"
        assert ">=" in ops, f"{req}: no lower bound"
        if req.name != "setuptools":
            assert "<" in ops, f"{req}: no upper bound"


def test_torch_admits_the_cpu_wheel_the_makefile_installs():
    (torch,) = (r for r in _requirements() if r.name == "torch")
    assert torch.specifier.contains("2.13.0+cpu") and _lock()["torch"] == Version("2.13.0")
    assert "pip install --quiet torch==2.13.0" in (REPO / "Makefile").read_text()


def test_a_range_rejects_what_it_should():
    """The check above could fail: the ranges exclude the next major version and anything below the lower bound."""
    reqs = {canonicalize_name(r.name): r for r in _requirements()}
    assert not reqs["numpy"].specifier.contains("3.0.0") and not reqs["numpy"].specifier.contains("1.26.4")
    assert not reqs["omegaconf"].specifier.contains("2.4.0")  # hydra-core 1.3 does not work with omegaconf 2.4
    assert not reqs["pandas"].specifier.contains("4.0.0")
