"""The manual's links lead somewhere: README.md and docs/*.md link to each other by relative
path and `#anchor`, and a page moved or a heading renamed must not leave a dead link."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MANUAL = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# [text](target) and ![alt](target); a target is up to the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```")


def prose(text: str) -> str:
    """The text outside fenced blocks: a `](` in a log excerpt is no link."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return "\n".join(kept)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for line in prose(page.read_text(encoding="utf-8")).splitlines():
        if match := re.fullmatch(r"#{1,6} (.+)", line):
            slug = anchor(match.group(1))
            numbered, count = slug, 0
            while numbered in found:  # GitHub numbers repeated headings: x, x-1, x-2
                count += 1
                numbered = f"{slug}-{count}"
            found.add(numbered)
    return found


def dead_links(page: Path) -> list[str]:
    dead = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not ours to check offline
            continue
        path_part, _, fragment = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            dead.append(f"{page.name}: {target} (no such file)")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            dead.append(f"{page.name}: {target} (no such heading)")
    return dead


def test_every_link_in_the_manual_resolves() -> None:
    dead = [entry for page in MANUAL for entry in dead_links(page)]
    assert dead == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    orphans = [page.name for page in MANUAL[1:] if f"docs/{page.name}" not in readme]
    assert orphans == []


def test_the_checker_finds_a_dead_link_and_a_dead_anchor(tmp_path: Path) -> None:
    """The checks above pass only if they can fail: try them on a made-up page."""
    (tmp_path / "other.md").write_text("# Other\n\n## Signals: `TERM` and `HUP`\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#signals-term-and-hup) [ok](#page) [web](https://x.org/y)\n"
        "[gone](missing.md) [bad](other.md#nowhere) ![pic](pic.png)\n"
        "```\n[not a link](nowhere.md)\n```\n"
    )
    assert dead_links(page) == [
        "page.md: missing.md (no such file)",
        "page.md: other.md#nowhere (no such heading)",
        "page.md: pic.png (no such file)",
    ]
    heading = "Observability: `dynocorn ctl`, `/metrics`"
    assert anchor(heading) == "observability-dynocorn-ctl-metrics"
