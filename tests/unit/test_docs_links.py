"""The README points the way and the docs hold together: no broken link, image or anchor, and the
MkDocs site builds in strict mode. Needs no server."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def heading_texts(path: Path) -> list[str]:
    texts = []
    for line in prose_lines(path):
        match = HEADING.match(line)
        if match:
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2))  # a link keeps its text
            texts.append(re.sub(r"[`*]", "", text))
    return texts


def github_slug(text: str) -> str:
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def mkdocs_slug(text: str) -> str:
    """Python-Markdown's toc slugify, which MkDocs uses by default."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path, slug, joiner: str) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for text in heading_texts(path):
        base = slug(text)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}{joiner}{count}")
    return found


def links(path: Path) -> list[str]:
    found = []
    for line in prose_lines(path):
        found += LINK.findall(INLINE_CODE.sub("", line))
    return [target for target in found if not SCHEME.match(target) and not target.startswith("/")]


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines, at most {MAX_README_LINES}"


def test_the_docs_exist():
    names = {page.name for page in PAGES}
    assert {"index.md", "architecture.md", "search.md", "api.md", "configuration.md",
            "operations.md", "scale-out.md", "benchmarks.md"} <= names


@pytest.mark.parametrize("source", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(source: Path):
    broken = []
    for target in links(source):
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve() if path else source
        if not resolved.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor and resolved.suffix == ".md":
            if anchor not in anchors(resolved, github_slug, "-"):
                broken.append(f"{target}: no heading with that anchor on GitHub")
            if anchor not in anchors(resolved, mkdocs_slug, "_"):
                broken.append(f"{target}: no heading with that anchor in MkDocs")
    assert not broken, f"{source.relative_to(ROOT)}: " + "; ".join(broken)


def test_slugs_follow_github_and_mkdocs():
    assert github_slug("What survives what") == mkdocs_slug("What survives what") == "what-survives-what"
    assert github_slug("API, command line and Python") == "api-command-line-and-python"
    assert github_slug("A / B") == "a--b" and mkdocs_slug("A / B") == "a-b"


def test_site_builds_strict(tmp_path: Path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "bench" / "RESULTS" / "index.html").exists()
