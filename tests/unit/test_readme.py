"""README.md stays true: its configuration tables match the settings classes, its commands exist."""

import re
from pathlib import Path

from tools.settings_table import with_tables

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_configuration_tables_match_the_settings_classes():
    assert with_tables(README) == README, "run `python tools/settings_table.py` to refresh README.md"


def test_the_two_setup_commands_are_makefile_targets():
    targets = set(re.findall(r"^([a-z]+):", (REPO / "Makefile").read_text(), flags=re.M))
    assert {"run", "test"} <= targets
    assert "make run" in README and "make test" in README


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()
