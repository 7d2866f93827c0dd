"""The model's class names, one per line, line index = class id."""

from pathlib import Path


def read_labels(path: Path) -> tuple[str, ...]:
    """Reads and checks a labels file: no blank lines, no duplicates."""
    labels = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    if not labels:
        raise ValueError(f"labels file {path} is empty")
    blank = [index for index, label in enumerate(labels) if not label]
    if blank:
        raise ValueError(f"labels file {path} has blank lines (class ids {blank[:5]})")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels file {path} repeats a label")
    return labels
