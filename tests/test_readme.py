"""The README's Python API block runs as written (with smaller Monte Carlo sizes)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout


def test_readme_python_api_block_runs():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no Python block"
    for code in blocks:
        exec(compile(code.replace("n=100_000", "n=2_000"), "README.md", "exec"), {})
