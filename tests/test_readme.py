"""The README is short and true: at most 15 KB; its Python blocks (and those of docs/) run as written (with smaller
Monte Carlo sizes); every command it shows and every override of its options table composes into a config that slr
accepts; its default-job table is the default job's (checked in tests/test_default_job.py, which runs that job)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from slr.app.config import check, check_landscape

ROOT = Path(__file__).resolve().parents[1]  # the checkout
README = ROOT / "README.md"
MAX_BYTES = 15_000


def blocks(page: Path, lang: str) -> list[str]:
    """The fenced code blocks of a Markdown page in language ``lang`` ("" for plain blocks)."""
    fenced = re.findall(r"^```(\w*)\n(.*?)^```", page.read_text(), flags=re.S | re.M)
    return [code for kind, code in fenced if kind == lang]


def test_readme_is_read_in_five_minutes():
    size = len(README.read_bytes())
    assert size <= MAX_BYTES, f"README.md is {size} bytes; move details to docs/ (at most {MAX_BYTES})"


def test_readme_python_api_block_runs():
    code = blocks(README, "python")
    assert code, "the README has no Python block"
    for block in code:
        exec(compile(block.replace("n=100_000", "n=2_000"), "README.md", "exec"), {})


DOC_BLOCKS = [(page, i) for page in sorted((ROOT / "docs").glob("*.md")) for i in range(len(blocks(page, "python")))]


@pytest.mark.parametrize("page, i", DOC_BLOCKS, ids=[f"{p.name}-{i}" for p, i in DOC_BLOCKS])
def test_docs_python_blocks_run(page, i, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))  # a block may import a module it defines, as a user's mypkg would
    code = blocks(page, "python")[i].replace("n=100_000", "n=2_000")
    exec(compile(code, str(page.relative_to(ROOT)), "exec"), {"__name__": f"docs_block_{i}"})


# ----- the commands and the options table --------------------------------------------------------------------------
APPS = {"python -m slr": ("config", check), "slr": ("config", check), "slr-landscape": ("slr_landscape", check_landscape)}


def overrides_of(words: list[str]) -> list[str]:
    """A command's overrides as one job of it: the first value of a swept list; Hydra's own (launcher) left out."""
    out = []
    for w in words:
        if w.startswith("-") or "=" not in w or w.startswith(("hydra/", "hydra.")):
            continue
        key, value = w.split("=", 1)
        out.append(f"{key}={value.split(',')[0]}")
    return out


def readme_commands() -> list[tuple[str, list[str]]]:
    """Every slr / slr-landscape command line of the README's shell blocks: (app, overrides)."""
    found = []
    for block in blocks(README, "bash"):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            for app in sorted(APPS, key=len, reverse=True):
                if line == app or line.startswith(app + " "):
                    found.append((app, overrides_of(shlex.split(line[len(app):]))))
                    break
    return found


def options_table() -> list[list[str]]:
    """The override sets of the README's options table: each backticked `key=value ...` is one set, and a bare
    `value` after it (`predictor=erf` / `softmax`) is the same key with another value."""
    section = README.read_text().split("## Options", 1)[1].split("\n## ", 1)[0]
    sets = []
    for row in re.findall(r"^\| (`.*?) \|", section, flags=re.M):
        for span in re.findall(r"`([^`]+)`", row):
            if "=" in span:
                sets.append(span.split())
            elif sets and "=" in sets[-1][-1]:
                sets.append([*sets[-1][:-1], f"{sets[-1][-1].split('=')[0]}={span}"])
    return [overrides_of(s) for s in sets if overrides_of(s)]


COMMANDS = readme_commands()
OPTIONS = options_table()


def test_the_readme_shows_commands_and_options():
    assert len(COMMANDS) >= 5 and any(app == "slr-landscape" for app, _ in COMMANDS), COMMANDS
    assert len(OPTIONS) >= 20, OPTIONS


@pytest.mark.parametrize("app, overrides", COMMANDS, ids=[" ".join([a, *o]) for a, o in COMMANDS])
def test_every_readme_command_composes_and_is_accepted(app, overrides, make_cfg):
    config_name, validate = APPS[app]
    validate(make_cfg(*overrides, config_name=config_name))


@pytest.mark.parametrize("overrides", OPTIONS, ids=[" ".join(o) for o in OPTIONS])
def test_every_option_of_the_table_composes_and_is_accepted(overrides, make_cfg, tmp_path, monkeypatch):
    if any(o.startswith("device=cuda") for o in overrides):
        pytest.importorskip("torch").cuda.is_available() or pytest.skip("no CUDA device here")
    # the user module of the table, mypkg.MyNet, is the one docs/transformer.md writes out
    (tmp_path / "mypkg.py").write_text(next(b for b in blocks(ROOT / "docs" / "transformer.md", "python")
                                            if "class MyNet" in b))
    monkeypatch.syspath_prepend(str(tmp_path))
    check(make_cfg(*overrides))


# ----- the default job's table, as the README prints it ------------------------------------------------------------
def readme_default_table() -> dict[str, list[str]]:
    """Rows of the README's default-job output: predictor name -> the numbers printed after it."""
    out = next(b for b in blocks(README, "") if b.lstrip().startswith("predictor"))
    rows = {}
    for line in out.splitlines()[1:]:
        cells = re.split(r"\s{2,}", line.strip(), maxsplit=1)  # names hold single spaces only
        if len(cells) == 2:
            rows[cells[0]] = re.findall(r"[\d.]+(?:e-?\d+)?", cells[1])
    return rows
