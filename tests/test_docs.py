"""The written science is in the repository and cites itself: every relative link of the README and of docs/ resolves
to a file that exists (and to a heading, when it names one), the docstrings and comments of the code cite docs/ pages
and headings that exist, and nothing cites the internal specification the project was built from."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target "title"), not images
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
CODE_DIRS = ("slr", "scripts", "tests", "conf")
CODE_FILES = sorted(p for d in CODE_DIRS for p in (REPO / d).rglob("*") if p.suffix in {".py", ".yaml", ".c"})
DOC_REF = re.compile(r"\bdocs/([A-Za-z0-9_.-]+\.md)(?:#([A-Za-z0-9_-]+))?")  # docs/page.md or docs/page.md#anchor


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold commands, not links
    return LINK.findall(text)


def slug(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rule) gives a heading: lower case, punctuation dropped, spaces
    to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (repeated headings get -1, -2, ... as on GitHub)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, flags=re.M):
        s = slug(heading)
        n = seen.get(s, 0)
        out.add(s if n == 0 else f"{s}-{n}")
        seen[s] = n + 1
    return out


def test_slug_follows_the_renderers_rule():
    assert slug("## 3. Why plain Monte Carlo goes blind near `d = 60`".lstrip("# ")) == \
        "3-why-plain-monte-carlo-goes-blind-near-d--60"
    assert slug("The paper's five experiments") == "the-papers-five-experiments"
    assert slug("Training, stacked") == "training-stacked"


def test_the_docs_exist_and_the_readme_links_them():
    assert (REPO / "docs" / "README.md").is_file()
    assert "docs/README.md" in links(REPO / "README.md")


def test_the_docs_index_maps_every_page():
    index = set(links(REPO / "docs" / "README.md"))
    pages = {p.name for p in (REPO / "docs").glob("*.md")} - {"README.md"}
    missing = sorted(p for p in pages if not any(t.split("#")[0] == p for t in index))
    assert not missing, f"docs/README.md does not link: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in links(page) + IMAGE.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # an absolute URL
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists() or (REPO not in path.parents and path != REPO):
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(target)
    assert not broken, f"{page.name}: links to missing files, headings, or outside the repository: {broken}"


def test_the_code_cites_docs_that_exist():
    """``docs/page.md`` and ``docs/page.md#heading`` in a docstring or comment of slr/, scripts/, tests/ or conf/ name
    a page and a heading that exist."""
    broken = []
    for src in CODE_FILES:
        if src.resolve() == Path(__file__).resolve():
            continue  # this file's own examples
        for page, anchor in DOC_REF.findall(src.read_text()):
            path = REPO / "docs" / page
            if not path.is_file() or (anchor and anchor not in anchors(path)):
                broken.append(f"{src.relative_to(REPO)}: docs/{page}" + (f"#{anchor}" if anchor else ""))
    assert not broken, f"citations of missing docs pages or headings: {broken}"


def test_nothing_cites_the_internal_specification():
    """The science is cited by its docs/ page; "SPEC" (the internal brief, not in the repository) appears nowhere."""
    files = [*PAGES, *(p for p in (REPO / "conf").rglob("*.yaml"))]
    files += [p for d in ("slr", "scripts", "tests") for p in (REPO / d).rglob("*") if p.suffix in {".py", ".c", ".md"}]
    files += [REPO / "Makefile", REPO / "pyproject.toml"]
    this = Path(__file__).resolve()
    hits = [f"{p.relative_to(REPO)}:{n}" for p in files if p.resolve() != this
            for n, line in enumerate(p.read_text().splitlines(), 1) if "SPEC" in line]
    assert not hits, f'"SPEC" cited (cite the docs/ page that derives it instead): {hits}'
