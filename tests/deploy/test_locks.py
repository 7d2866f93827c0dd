"""The hashed locks are in step with the requirements.in files they are compiled from (`make lock`), and agree."""

import re

import pytest

from tests.deploy.locks import DEV_LOCK, LOCKS, locked, pins, unlisted_lines
from tests.deploy.manifests import REPO

LOCK_IDS = [str(lock.relative_to(REPO)) for lock in LOCKS]


def test_every_requirements_in_has_its_lock():
    patterns = ("requirements*.in", "*/requirements.in", "services/*/requirements.in")
    lists = {p.with_suffix(".txt") for pattern in patterns for p in REPO.glob(pattern)}
    assert lists - {REPO / "services" / "common" / "requirements.txt"} == set(LOCKS)
    assert not (REPO / "services" / "common" / "requirements.txt").exists(), "every service's lock holds common's"


@pytest.mark.parametrize("lock", LOCKS, ids=LOCK_IDS)
def test_every_direct_requirement_is_an_exact_pin(lock):
    loose = {name: spec for name, spec in pins(lock.with_suffix(".in")).items() if not re.fullmatch(r"==\S+", spec)}
    assert not loose, f"{lock.with_suffix('.in').relative_to(REPO)}: pin with == only: {loose}"


@pytest.mark.parametrize("lock", LOCKS, ids=LOCK_IDS)
def test_lock_is_in_step_with_its_in_file(lock):
    listed = pins(lock.with_suffix(".in"))
    packages = locked(lock)
    versions = {name: f"=={package.version}" for name, package in packages.items()}
    stale = {name: (spec, versions.get(name)) for name, spec in listed.items() if versions.get(name) != spec}
    assert not stale, f"run `make lock`: {lock.relative_to(REPO)} lacks these pins of its .in (pinned, locked): {stale}"
    dropped = {n for n, package in packages.items() if package.direct} - set(listed)
    assert not dropped, f"run `make lock`: {lock.relative_to(REPO)} still lists what its .in no longer does: {dropped}"


@pytest.mark.parametrize("lock", LOCKS, ids=LOCK_IDS)
def test_every_locked_package_has_a_hash(lock):
    assert not unlisted_lines(lock), f"{lock.relative_to(REPO)} has lines pip would install without a hash"
    unhashed = [name for name, package in locked(lock).items() if not package.hashes]
    assert not unhashed, f"{lock.relative_to(REPO)}: no hash for {unhashed}"
    assert len(locked(lock)) > len(pins(lock.with_suffix(".in"))), "the lock holds the transitive packages too"


@pytest.mark.parametrize("lock", [lock for lock in LOCKS if lock != DEV_LOCK], ids=LOCK_IDS[1:])
def test_images_install_the_versions_the_tests_run(lock):
    dev = locked(DEV_LOCK)
    differ = {
        name: (package.version, dev[name].version if name in dev else None)
        for name, package in locked(lock).items()
        if name not in dev or (dev[name].version, set(dev[name].hashes)) != (package.version, set(package.hashes))
    }
    assert not differ, (
        f"run `make lock`: {lock.relative_to(REPO)} and requirements-dev.txt disagree (version here, there): {differ}"
    )


def test_locks_are_compiled_for_the_images_python():
    makefile = (REPO / "Makefile").read_text()
    dockerfile = (REPO / "services" / "Dockerfile").read_text()
    (image_python,) = re.findall(r"^ARG PYTHON_IMAGE=python:(3\.\d+)\.", dockerfile, re.MULTILINE)
    assert f"--python-version {image_python} " in makefile
    assert "--python-platform x86_64-manylinux_2_36" in makefile, "the images are Debian bookworm (glibc 2.36)"
    assert "bookworm" in dockerfile


def test_setup_installs_the_dev_lock_with_hashes():
    makefile = (REPO / "Makefile").read_text()
    installs = re.findall(r"pip install ([^\n]*)", makefile)
    assert "--quiet --require-hashes --no-deps -r requirements-dev.txt" in installs
    requirement_files = [args for args in installs if " -r " in f" {args}"]
    assert all("--require-hashes" in args for args in requirement_files), requirement_files
    (client,) = [args for args in installs if "clients/python" in args]
    assert "--no-deps" in client, "the client's dependencies come from the lock"
