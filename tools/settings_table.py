"""Writes docs/configuration.md's settings tables from each Settings class (`python tools/settings_table.py`)."""

import importlib
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "gen")]

SERVICES = ("gateway", "auth", "catalog", "inference")
DOCUMENT = REPO / "docs" / "configuration.md"
# `make run` (`python -m local`) has settings of its own: every port of the whole system, where its data lives.
LAUNCHER = "make run"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def _default(field) -> str:
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, list | tuple):
        value = ", ".join(map(str, value))
    if hasattr(value, "get_secret_value"):
        value = "(set)" if value.get_secret_value() else ""
    text = "" if value is None else str(value).replace(str(REPO) + "/", "")
    return f"`{text}`" if text else "-"


def settings_class(section: str):
    if section == LAUNCHER:
        return importlib.import_module("local.config").LocalSettings
    return importlib.import_module(f"services.{section}.config").Settings


def table(section: str) -> str:
    settings = settings_class(section)
    prefix = settings.model_config.get("env_prefix", "TAGSMITH_")
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in sorted(settings.model_fields.items()):
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{name.upper()}` | {_default(field)} | {description} |")
    return "\n".join(rows)


def tables() -> str:
    return "\n".join(f"### {section}\n\n{table(section)}\n" for section in (*SERVICES, LAUNCHER))


def with_tables(text: str) -> str:
    """The document's text with the block between the settings markers replaced by fresh tables."""
    block = f"{BEGIN}\n{tables()}{END}"
    return re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)


def main() -> None:
    DOCUMENT.write_text(with_tables(DOCUMENT.read_text()))


if __name__ == "__main__":
    main()
