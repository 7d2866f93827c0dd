"""Static checks of the service images: pinned base, non-root, only the service's own code, runnable entry point."""

import ast
import importlib
import importlib.metadata
import json
import re
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.locks import requirement_lines
from tests.deploy.manifests import REPO, SERVICES, find, render_overlay, served_base_paths, workloads

IMAGES = (*SERVICES, "modelserver")
DOCKERFILE = REPO / "services" / "Dockerfile"
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$")
# What an image may copy besides services/<name>: the shared package, what the protobuf code is generated from,
# and the class names.
SHARED_SOURCES = {
    "services/__init__.py",
    "services/common",
    "protos",
    "protos/requirements.txt",
    "tools/capture_tfserving_descriptors.py",
    "model/imagenet_labels.txt",
}
FIRST_PARTY = {"services", "tagsmith", "model", "tools", "local", "tests", "bench"}


def instructions(path: Path, *, service: str | None = None) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped; ${SERVICE} filled in."""
    text = re.sub(r"\\\n", " ", path.read_text())
    if service:
        text = text.replace("${SERVICE}", service)
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines if line and line[0] != "#"]


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last:]


def copy_sources(steps: list[tuple[str, str]]) -> list[str]:
    """Build-context paths copied by COPY instructions (not those copying from another stage)."""
    sources = []
    for keyword, args in steps:
        if keyword == "COPY" and "--from=" not in args:
            words = [w for w in args.split() if not w.startswith("--")]
            sources.extend(words[:-1])
    return sources


def image_ports(service: str) -> set[int]:
    """The PORTS build argument `make images` passes for the service."""
    (ports,) = re.findall(rf"^PORTS_{service} := (.*)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    return {int(port) for port in ports.split()}


def test_one_recipe_for_every_service():
    assert not list(REPO.glob("services/*/Dockerfile")), "services/Dockerfile is the only service image recipe"
    makefile = (REPO / "Makefile").read_text()
    (listed,) = re.findall(r"^IMAGE_SERVICES := (.*)$", makefile, re.MULTILINE)
    assert set(listed.split()) == set(IMAGES), "`make images` builds every service"
    for readme in (REPO / "README.md", REPO / "docs" / "deployment.md", REPO / "docs" / "development.md"):
        assert not re.search(r"services/\$\w+/Dockerfile", readme.read_text()), f"{readme} builds old recipes"


def test_base_image_is_pinned_and_the_build_multi_stage():
    steps = instructions(DOCKERFILE)
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    assert PINNED_PYTHON.match(args["PYTHON_IMAGE"]), "python 3.11 slim bookworm, exact version and digest"
    stages = [a for k, a in steps if k == "FROM"]
    assert len(stages) >= 2
    assert all(stage.split()[0] == "${PYTHON_IMAGE}" for stage in stages)
    assert not re.search(r"\blatest\b", DOCKERFILE.read_text(), re.IGNORECASE)


def test_runs_as_a_numeric_non_root_user():
    users = [a for k, a in final_stage(instructions(DOCKERFILE)) if k == "USER"]
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0, users[-1]


@pytest.mark.parametrize("service", IMAGES)
def test_kubernetes_runs_the_image_as_its_own_user(service):
    uid, _, gid = [a for k, a in final_stage(instructions(DOCKERFILE)) if k == "USER"][-1].partition(":")
    overlay = "dev" if service == "modelserver" else "small"
    running = [
        w
        for w in workloads(render_overlay(overlay))
        if any(c["image"].rpartition(":")[0].endswith(f"tagsmith/{service}") for c in w.containers())
    ]
    assert running, f"the {overlay} overlay runs tagsmith/{service}"
    for workload in running:
        context = workload.pod["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid)), workload.name


@pytest.mark.parametrize("service", IMAGES)
def test_entry_point_and_environment(service):
    steps = final_stage(instructions(DOCKERFILE, service=service))
    (entrypoint,) = [a for k, a in steps if k == "ENTRYPOINT"]
    shell, flag, script, name = json.loads(entrypoint)
    assert (shell, flag, name) == ("/bin/sh", "-c", "--")
    assert script == 'exec python -m "$SERVICE_MODULE" "$@"', "exec: signals go to Python, not to a shell"
    env = " ".join(a for k, a in steps if k == "ENV")
    assert re.search(rf"\bSERVICE_MODULE=services\.{service}$", env) or f"SERVICE_MODULE=services.{service} " in env
    assert (REPO / "services" / service / "__main__.py").is_file()
    assert re.search(r"\bPYTHONPATH=/app/gen:/app\b", env)
    assert re.search(r"\bPYTHONDONTWRITEBYTECODE=1\b", env), "the root filesystem is read-only"


@pytest.mark.parametrize("service", IMAGES)
def test_installs_the_services_locked_requirements_with_hashes(service):
    runs = " ".join(a for k, a in instructions(DOCKERFILE, service=service) if k == "RUN")
    assert f"pip install --require-hashes --no-deps -r services/{service}/requirements.txt" in runs
    installs = re.findall(r"pip install (.*?)(?:&&|$)", runs)
    assert installs and all("--require-hashes" in args for args in installs), f"every install is hashed: {installs}"
    listed = (REPO / "services" / service / "requirements.in").read_text().splitlines()
    assert listed[0] == "-r ../common/requirements.in", "the service's lock holds the shared plumbing's packages"


def test_generates_the_protobuf_code_with_the_pinned_compiler():
    steps = instructions(DOCKERFILE)
    runs = " ".join(a for k, a in steps if k == "RUN")
    assert "grpc_tools.protoc -I protos" in runs and "capture_tfserving_descriptors.py" in runs
    assert any(k == "COPY" and "--from=protos" in a and a.endswith("/app/gen") for k, a in steps)
    pins = {
        Requirement(line).name: str(Requirement(line).specifier)
        for line in requirement_lines(REPO / "protos" / "requirements.txt")
    }
    dev = {
        Requirement(line).name: str(Requirement(line).specifier)
        for line in requirement_lines(REPO / "requirements-dev.txt")
    }
    for name, specifier in pins.items():
        assert specifier.startswith("=="), f"exact pins only: {name}"
        assert dev.get(name) == specifier, f"images generate code with the {name} that `make protos` uses"


@pytest.mark.parametrize("service", IMAGES)
def test_copies_only_the_services_own_code(service):
    allowed = {*SHARED_SOURCES, f"services/{service}", f"services/{service}/requirements.txt"}
    sources = copy_sources(instructions(DOCKERFILE, service=service))
    assert set(sources) <= allowed, f"copies more than its own code: {set(sources) - allowed}"
    assert {f"services/{service}", "services/common", "protos"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source
        assert not _ignored(source, REPO / ".dockerignore"), f".dockerignore keeps {source} out of the build context"


@pytest.mark.parametrize("service", IMAGES)
def test_exposes_the_services_default_ports(service):
    assert [a for k, a in final_stage(instructions(DOCKERFILE)) if k == "EXPOSE"] == ["${PORTS}"]
    defaults = importlib.import_module(f"services.{service}.config").Settings.model_fields
    assert defaults["port"].default in image_ports(service)
    if defaults["metrics_port"].default is not None:
        assert defaults["metrics_port"].default in image_ports(service)


@pytest.mark.parametrize("service", IMAGES)
def test_everything_the_service_imports_is_in_its_image(service):
    """Follows imports from services/<name>/__main__.py: first-party modules must be copied into the image
    (the protobuf code is generated into gen/), third-party ones installed by its requirements."""
    copied = [*copy_sources(instructions(DOCKERFILE, service=service)), "gen/tagsmith"]
    installed = requirement_closure(REPO / "services" / service / "requirements.txt")
    distributions = importlib.metadata.packages_distributions()
    for top, module in third_party_and_first_party_imports(service):
        if top in FIRST_PARTY:
            path = module.replace(".", "/")
            root = "gen/" if top == "tagsmith" else ""
            assert any(f"{root}{path}".startswith(source.removesuffix(".py")) for source in copied), (
                f"{service} imports {module}, which the image does not copy"
            )
        else:
            providers = {canonicalize_name(d) for d in distributions.get(top, [])}
            assert providers & installed, f"{service} imports {top}, which services/{service}/requirements.txt lacks"


def third_party_and_first_party_imports(service: str) -> set[tuple[str, str]]:
    """(top-level package, module) for every non-stdlib import reachable from the service's entry point."""
    found: set[tuple[str, str]] = set()
    pending = [REPO / "services" / service / "__main__.py"]
    seen: set[Path] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            found.add((top, module))
            if top == "services":
                pending.extend(_module_files(module))
    return found


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            modules.add(base)
            modules.update(f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}"))
    return modules


def _is_module(module: str) -> bool:
    return bool(_module_files(module))


def _module_files(module: str) -> list[Path]:
    """The file or package __init__ a first-party module lives in, plus its parents' __init__ files."""
    parts = module.split(".")
    files = [REPO.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts) + 1)]
    files.append(REPO.joinpath(*parts).with_suffix(".py"))
    return [f for f in files if f.is_file()]


def requirement_closure(path: Path) -> set[str]:
    """Distribution names a requirements file installs, with everything they depend on (from installed metadata)."""
    names: set[str] = set()
    pending = [(Requirement(line), frozenset(Requirement(line).extras)) for line in requirement_lines(path)]
    while pending:
        requirement, extras = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in names:
            continue
        names.add(name)
        for spec in importlib.metadata.requires(requirement.name) or []:
            dependency = Requirement(spec)
            markers = [{"extra": extra} for extra in extras or {""}]
            if dependency.marker is None or any(dependency.marker.evaluate(m) for m in markers):
                pending.append((dependency, frozenset(dependency.extras)))
    return names


def _ignored(source: str, ignore_file: Path) -> bool:
    """Docker's rule: the last matching pattern wins, `!` re-includes; a directory's pattern covers its contents."""
    ignored = False
    for raw in ignore_file.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = source.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch(prefix, pattern) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_model_and_local_state_out():
    for path in ("models/efficientnet_lite0/1/saved_model.pb", ".venv/bin/python", "var/blobs/x", "tests/conftest.py"):
        assert _ignored(path, REPO / ".dockerignore"), path
    model_ignore = REPO / "deploy" / "model.Dockerfile.dockerignore"
    assert not _ignored("models/efficientnet_lite0/1/saved_model.pb", model_ignore)
    assert not _ignored("models/face_detector/1/saved_model.pb", model_ignore)
    assert _ignored("services/auth/server.py", model_ignore)


def test_model_image_feeds_the_tfserving_init_container():
    steps = instructions(REPO / "deploy" / "model.Dockerfile")
    assert copy_sources(steps) == ["models/efficientnet_lite0", "models/face_detector"]
    assert not re.search(r"\blatest\b", (REPO / "deploy" / "model.Dockerfile").read_text(), re.IGNORECASE)
    uid = [a for k, a in steps if k == "USER"][-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0
    pod = find(render_overlay("small"), "Deployment", "tfserving")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"].split(":")[0].endswith("tagsmith/model")
    (target,) = init["args"]
    (mount,) = [m for m in init["volumeMounts"] if m["mountPath"] == target]
    (server,) = pod["containers"]
    served = next(m for m in server["volumeMounts"] if m["name"] == mount["name"])["mountPath"]
    base_paths = served_base_paths(render_overlay("small"), pod)
    assert base_paths == {name: f"{served}/{name}" for name in ("efficientnet_lite0", "face_detector")}, (
        "TF Serving reads the directories the init container fills"
    )
