"""The written science is in the repository: every relative link of the README and of docs/ resolves to a file that
exists, and nothing links outside the repository's own files."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target "title"), not images


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold commands, not links
    return LINK.findall(text)


def test_the_docs_exist_and_the_readme_links_them():
    assert (REPO / "docs" / "README.md").is_file()
    assert "docs/README.md" in links(REPO / "README.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # an absolute URL or an anchor on the same page
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists() or REPO not in path.parents:
            broken.append(target)
    assert not broken, f"{page.name}: links to missing files or outside the repository: {broken}"


def test_no_page_sends_the_reader_outside_the_repository_for_the_science():
    for page in PAGES:
        assert "shared/SPEC" not in page.read_text(), page
