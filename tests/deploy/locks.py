"""Reads the requirements.in lists and the hashed requirements.txt locks that `make lock` compiles from them."""

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.manifests import REPO

DEV_LOCK = REPO / "requirements-dev.txt"
# Every lock beside its .in; services/common's list has none of its own, every service's lock holds it.
LOCKS = (
    DEV_LOCK,
    *sorted(p for p in REPO.glob("services/*/requirements.txt")),
    REPO / "model" / "requirements.txt",
    REPO / "protos" / "requirements.txt",
)
# `-r path/to/requirements.in` in a `# via` annotation: the package is listed in that .in file.
LISTED_IN = re.compile(r"-r (\S+\.in)\b")


@dataclass(frozen=True)
class Locked:
    name: str
    version: str
    hashes: tuple[str, ...]
    direct: bool  # listed in a .in file, not only pulled in by another package


def requirement_lines(path: Path) -> list[str]:
    """Every requirement a file lists, following `-r` includes; continuations joined, options and comments dropped."""
    lines = []
    for raw in path.read_text().replace("\\\n", " ").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r "):
            lines.extend(requirement_lines((path.parent / line[3:].strip()).resolve()))
        elif line and not line.startswith("-"):  # options such as an editable local package (-e) name no pin
            lines.append(" ".join(word for word in line.split() if not word.startswith("--")))
    return lines


def pins(path: Path) -> dict[str, str]:
    """Canonical name -> version specifier of every requirement a .in file lists (its includes too)."""
    return {canonicalize_name(r.name): str(r.specifier) for r in map(Requirement, requirement_lines(path))}


def locked(path: Path) -> dict[str, Locked]:
    """Every package of a lock: `name==version \\`, its `--hash=` lines, then its `# via` annotation."""
    entries: dict[str, Locked] = {}
    for block in re.split(r"\n(?=\S)", path.read_text()):
        if block.startswith("#"):
            continue
        head, *rest = block.replace("\\\n", "\n").splitlines()
        requirement = Requirement(head.strip())
        hashes = tuple(line.strip().removeprefix("--hash=") for line in rest if line.strip().startswith("--hash="))
        (version,) = [s.version for s in requirement.specifier if s.operator == "=="]
        direct = any(LISTED_IN.search(line) for line in rest)
        name = canonicalize_name(requirement.name)
        entries[name] = Locked(name, version, hashes, direct)
    return entries


def unlisted_lines(path: Path) -> list[str]:
    """Lines of a lock that are neither a pin, a hash, nor a comment: each would be installed without a hash."""
    pattern = re.compile(r"^(\S+==\S+ \\|    --hash=sha256:[0-9a-f]{64}( \\)?|\s*#.*)$")
    return [line for line in path.read_text().splitlines() if line and not pattern.match(line)]
