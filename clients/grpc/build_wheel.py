"""Builds the tagsmith_grpc wheel: the stubs `make protos` generated in gen/, packaged by this folder's pyproject.

Usage: python clients/grpc/build_wheel.py [OUTPUT_DIR]   (default dist/; prints the wheel's path)
"""

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def build(output: Path) -> Path:
    generated = REPO / "gen" / "tagsmith"
    if not generated.is_dir():
        raise SystemExit("gen/tagsmith is missing: run `make protos` first")
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tagsmith-grpc-") as scratch:
        project = Path(scratch) / "tagsmith_grpc"
        shutil.copytree(HERE, project, ignore=shutil.ignore_patterns("src", "build", "*.egg-info", "__pycache__"))
        shutil.copytree(generated, project / "src" / "tagsmith", ignore=shutil.ignore_patterns("__pycache__"))
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(output)]
        # setuptools already installed builds offline; without it pip fetches it into an isolated environment.
        if importlib.util.find_spec("setuptools") is not None:
            command.append("--no-build-isolation")
        subprocess.run([*command, str(project)], check=True)
    return max(output.glob("tagsmith_grpc-*.whl"), key=lambda path: path.stat().st_mtime)


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "dist"))
