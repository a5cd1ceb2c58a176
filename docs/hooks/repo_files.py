"""mkdocs hook: serve the repository's notebooks and figures in the site, where the pages link them.

The pages in docs/ link the notebooks and figures where they live in the repository
(``../notebooks/explore_condensation.ipynb``, ``../figures/smollm2-135m_heatmap.png``), so the links
also work on a code host. Here those files join the site under the same folder names
(``notebooks/``, ``figures/``), and each such link is rewritten to point at the copy in the site.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

# repository folder -> the files of it that join the site (same relative path inside the site)
MOUNTS = {"notebooks": ("*.ipynb",), "figures": ("*.png", "experiments/*.png")}
_LINK = re.compile(r"(\]\(|src=\")(?!https?:|#|/)([^)\"\s]+)")


def _repo_root(config) -> Path:
    return Path(config["docs_dir"]).resolve().parent


@event_priority(100)  # before mkdocs-jupyter wraps the .ipynb files into pages
def on_files(files: Files, config) -> Files:
    root = _repo_root(config)
    for folder, patterns in MOUNTS.items():
        for pattern in patterns:
            for path in sorted((root / folder).glob(pattern)):
                uri = path.relative_to(root).as_posix()
                files.append(File(uri, src_dir=str(root), dest_dir=config["site_dir"],
                                  use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Links from docs/<page> into a mounted folder of the repository -> the same file in the site."""
    page_dir = posixpath.dirname(page.file.src_uri)  # relative to docs/

    def rewrite(match: re.Match) -> str:
        target, _, anchor = match.group(2).partition("#")
        in_repo = posixpath.normpath(posixpath.join("docs", page_dir, target))
        if in_repo.split("/")[0] not in MOUNTS:
            return match.group(0)
        in_site = posixpath.relpath(in_repo, page_dir or ".")
        return match.group(1) + in_site + (f"#{anchor}" if anchor else "")

    return _LINK.sub(rewrite, markdown)
