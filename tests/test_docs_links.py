"""The docs hold together: every relative link and image in README.md and docs/ points to a file that exists (and to
a heading that exists, for links into a Markdown page), README stays a landing page, and docs/architecture.md names
every file of the package, the benchmarks and the tests."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<img\s[^>]*src=\"([^\"]+)\"")
LISTED = ("mtl3dcli", "benchmarks", "tests")
DESCRIPTION_COLUMN = 24  # architecture.md's tree: descriptions start here, names never do


def _prose(text: str) -> str:
    """The page without fenced code blocks and inline code, where brackets are not links."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"),
                                                    flags=re.M | re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def links(page: Path) -> list[str]:
    found = [a or b for a, b in LINK.findall(_prose(page.read_text(encoding="utf-8")))]
    return [t for t in found if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto: are not checked


def test_anchor_rule_matches_github():
    page = ROOT / "docs" / "cost.md"
    assert "make-demo" in anchors(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        path, _, anchor = unquote(target).partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_readme_is_a_landing_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    first_screen = "\n".join(text.splitlines()[:30])
    for needed in ("make demo", "make test", "--preset invpt-vitl-nyuv2", "docs/library.md"):
        assert needed in first_screen, needed


def architecture_paths() -> set[str]:
    """The paths docs/architecture.md's layout tree names: two spaces of indent per folder level, names before the
    first run of two spaces, several names on one line separated by commas; lines indented to the description
    column continue a description."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    tree = re.search(r"^## Layout\n+```\n(.*?)^```", text, flags=re.M | re.S).group(1)
    named, folders = set(), []
    for line in tree.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if indent >= DESCRIPTION_COLUMN or not line.strip():
            continue  # a description's continuation line
        names = [n.strip() for n in re.split(r"\s{2,}", line.strip())[0].split(",")]
        del folders[indent // 2:]
        for name in names:
            named.add("/".join([*folders, name.rstrip("/")]))
        if names[-1].endswith("/"):
            folders.append(names[-1].rstrip("/"))
    return named


def _needs_a_line(path: Path) -> bool:
    """Every Python file but an `__init__.py` that holds nothing beyond its docstring."""
    if path.name != "__init__.py":
        return True
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return not (len(body) <= 1 and all(isinstance(n, ast.Expr) for n in body))


def test_architecture_names_every_file():
    named = architecture_paths()
    files = {p.relative_to(ROOT).as_posix() for folder in LISTED for p in (ROOT / folder).rglob("*.py")
             if "__pycache__" not in p.parts and _needs_a_line(p)}
    assert not sorted(files - named), f"add to docs/architecture.md's layout: {sorted(files - named)}"
    stale = sorted(p for p in named if not (ROOT / p).exists())
    assert not stale, f"docs/architecture.md names files that do not exist: {stale}"
