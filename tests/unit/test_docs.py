"""The docs stay true: generated settings tables match the settings classes, commands and links exist."""

import re
from pathlib import Path

from tools.settings_table import DOCUMENT, with_tables

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
DOCS = sorted((REPO / "docs").glob("*.md"))
# [text](target): a Markdown link; the target's part before any #anchor.
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_configuration_tables_match_the_settings_classes():
    text = DOCUMENT.read_text()
    assert with_tables(text) == text, "run `python tools/settings_table.py` to refresh docs/configuration.md"


def test_the_two_setup_commands_are_makefile_targets():
    targets = set(re.findall(r"^([a-z]+):", (REPO / "Makefile").read_text(), flags=re.M))
    assert {"run", "test"} <= targets
    assert "make run" in README and "make test" in README


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_the_readme_links_every_document_under_docs():
    linked = set(LINK.findall(README))
    for document in DOCS:
        assert f"docs/{document.name}" in linked, f"README.md links docs/{document.name}"


def test_relative_links_lead_to_files_that_exist():
    for page in (REPO / "README.md", *DOCS, REPO / "deploy" / "k8s" / "README.md"):
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(REPO)} links {target}, which does not exist"
