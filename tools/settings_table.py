"""Prints README.md's configuration tables from each service's Settings class."""

import importlib
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "gen")]

SERVICES = ("gateway", "auth", "catalog", "inference")


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        value = ", ".join(map(str, value)) if isinstance(value, list | tuple) else value
    else:
        value = field.default
    if value is None or value == "":
        return "-"
    if hasattr(value, "get_secret_value"):
        return "-" if not value.get_secret_value() else "(set)"
    return str(value).replace(str(Path.cwd()) + "/", "")


def table(service: str) -> str:
    settings = importlib.import_module(f"services.{service}.config").Settings
    prefix = settings.model_config.get("env_prefix", "TAGSMITH_")
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{name.upper()}` | `{_default(field)}` | {description} |")
    return "\n".join(rows)


def main() -> None:
    for service in SERVICES:
        print(f"### {service}\n\n{table(service)}\n")


if __name__ == "__main__":
    main()
