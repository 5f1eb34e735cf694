"""The documentation stands on its own: a short front page, links that resolve, every
rule the code cites stated in docs/rules.md, nothing pointing outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCS = [README, ROOT / "deploy" / "README.md", *PAGES]
LINK = re.compile(r"\]\(([^)\s]+)\)")
RULE = re.compile(r"\bR([0-9]{1,2})\b")


def test_the_front_page_is_short_and_shows_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    assert "make run" in text and "make test" in text


def test_every_docs_page_is_linked_from_the_front_page() -> None:
    text = README.read_text()
    assert PAGES, "docs/ has no page"
    for page in PAGES:
        assert f"(docs/{page.name})" in text, page.name


def test_relative_links_resolve_to_files_and_headings() -> None:
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (doc.parent / path).resolve() if path else doc
            assert linked.exists(), f"{doc.relative_to(ROOT)}: {target}"
            if anchor and linked.suffix == ".md":
                anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", linked.read_text(), re.M)}
                assert anchor in anchors, f"{doc.relative_to(ROOT)}: {target}"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_nothing_points_outside_the_repository() -> None:
    for doc in DOCS:
        text = doc.read_text()
        assert "../shared" not in text and "DESIGN.md" not in text, doc.relative_to(ROOT)


def test_every_rule_cited_in_the_code_is_stated_in_the_rules_page() -> None:
    rules = (ROOT / "docs" / "rules.md").read_text()
    stated = {int(n) for n in re.findall(r"^\*\*R([0-9]{1,2})\. ", rules, re.M)}
    cited: set[int] = set()
    for folder in ("stream_app", "tests", "bench", "schemas"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".json"):
                cited |= {int(n) for n in RULE.findall(path.read_text())}
    assert cited, "no rule cited anywhere: the pattern is wrong"
    assert cited <= stated, f"cited but not stated in docs/rules.md: {sorted(cited - stated)}"
    assert stated == set(range(1, max(stated) + 1)), "rules are numbered without gaps"
