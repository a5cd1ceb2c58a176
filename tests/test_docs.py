"""The README links into the docs site and the repository with relative links that must resolve.

The site itself is checked by its strict build (`make docs`, part of `make test`): broken links and
anchors between its pages, missing API objects and stale docstring cross-references fail it.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _heading_anchors(markdown: str) -> set[str]:
    """Anchors of a page's headings as mkdocs' toc and code hosts make them (lower case, words joined by -)."""
    anchors = set()
    for title in re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower().replace("`", ""))
        anchors.add(re.sub(r"[ ]+", "-", slug))
    return anchors


def test_readme_relative_links_resolve():
    readme = (ROOT / "README.md").read_text()
    targets = [t for t in LINK.findall(readme) if not re.match(r"[a-z]+:", t)]
    assert targets, "the README links nothing"
    broken = []
    for target in targets:
        path, _, anchor = target.partition("#")
        file = ROOT / path if path else ROOT / "README.md"
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _heading_anchors(file.read_text()):
            broken.append(target)
    assert not broken, f"README links that do not resolve: {broken}"

