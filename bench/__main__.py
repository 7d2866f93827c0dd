"""Runs benchmarks: `python -m bench` runs every module in bench/; `python -m bench inference` only the named ones."""

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(available())})")
    names = parser.parse_args(argv).names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(available())}")
    for name in names:
        print(f"== bench {name}", flush=True)
        started = time.monotonic()
        importlib.import_module(f"bench.{name}").run()
        print(f"== bench {name} done in {time.monotonic() - started:.0f}s\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
