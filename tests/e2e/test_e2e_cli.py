"""The `tagsmith` command and the Python client against the whole running system."""

import hashlib
import io
import json
import os
import pty
import random
import signal
import stat
import subprocess
import sys
import threading
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
import skimage.data
from PIL import Image
from tagsmith_client import ApiError, Client

from tests.e2e.conftest import PASSWORD
from tests.support.waiting import eventually_blocking

SOURCES = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png", "horse.png")


def photo_tree(root: Path, count: int, *, seed: int) -> list[Path]:
    """`count` distinct JPEGs cut from real photographs, spread over nested folders."""
    rng = random.Random(seed)
    folder = Path(skimage.data.__file__).parent
    sources = [Image.open(folder / name).convert("RGB") for name in SOURCES]
    paths = []
    for index in range(count):
        source = sources[index % len(sources)]
        width, height = source.size
        left, top = rng.randint(0, width // 5), rng.randint(0, height // 5)
        picture = source.crop((left, top, left + width * 3 // 4, top + height * 3 // 4)).resize((320, 240))
        picture.putpixel((0, 0), (index % 256, seed % 256, 7))
        path = root / f"album{index % 3}" / ("day" if index % 2 else "night") / f"photo{index:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=88)
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def register(api: httpx.Client) -> str:
    username = f"cli_{uuid.uuid4().hex[:10]}"
    reply = api.post("/v1/auth/register", json={"username": username, "password": PASSWORD})
    assert reply.status_code == 201, reply.text
    return username


def cli_env(api_url: str, config: Path, username: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGSMITH_")}
    env |= {"TAGSMITH_URL": api_url, "XDG_CONFIG_HOME": str(config)}
    if username:
        env |= {"TAGSMITH_USERNAME": username, "TAGSMITH_PASSWORD": PASSWORD}
    return env


def tagsmith(*args: str, env: dict[str, str], stdin: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tagsmith_client", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


@pytest.fixture
def account(api, api_url, tmp_path):
    """A new user, and the CLI's environment logging in as that user by itself."""
    username = register(api)
    return username, cli_env(api_url, tmp_path / "config", username)


def test_import_a_tree_then_a_second_run_sends_nothing(account, api_url, tmp_path):
    username, env = account
    paths = photo_tree(tmp_path / "photos", 54, seed=1)
    first = tagsmith("upload", "-r", str(tmp_path / "photos"), env=env)
    assert first.returncode == 0, first.stderr
    assert "54 files: 54 new, 0 already there, 0 refused, 0 failed" in first.stdout
    # Not on a terminal: plain progress lines on stderr, the last one complete.
    progress = [line for line in first.stderr.splitlines() if line.startswith("progress: ")]
    assert progress and progress[-1].startswith("progress: 54/54 files")
    assert "left" in progress[-1]
    with Client(api_url, username=username, password=PASSWORD) as client:
        stored = list(client.images(page_size=7))
    assert len(stored) == len({image.uid for image in stored}) == 54
    assert {image.sha256 for image in stored} == {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}

    second = tagsmith("upload", "-r", "--json", str(tmp_path / "photos"), env=env)
    assert second.returncode == 0, second.stderr
    *files, summary = json_lines(second.stdout)
    assert summary["summary"] | {"seconds": 0} == {
        "new": 0,
        "duplicate": 54,
        "refused": 0,
        "failed": 0,
        "not_started": 0,
        "bytes_sent": 0,
        "seconds": 0,
        "interrupted": False,
    }
    assert {f["status"] for f in files} == {"duplicate"}
    assert {f["uid"] for f in files} == {image.uid for image in stored}
    assert {f["path"] for f in files} == {str(p) for p in paths}
    assert all(set(f) >= {"path", "status", "uid", "category", "error"} for f in files)


def test_on_a_terminal_the_progress_is_a_redrawn_bar(account, tmp_path):
    _, env = account
    photo_tree(tmp_path / "photos", 4, seed=5)
    controller, terminal = pty.openpty()
    captured: list[str] = []
    # Read while the command runs, so a full terminal buffer never blocks it.
    reader = threading.Thread(target=lambda: captured.append(_read_all(controller)))
    reader.start()
    try:
        command = [sys.executable, "-m", "tagsmith_client", "upload", "-r", str(tmp_path / "photos")]
        run = subprocess.run(command, env=env, stderr=terminal, stdout=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(terminal)
        reader.join(timeout=30)
        os.close(controller)
    shown = captured[0]
    assert run.returncode == 0
    assert "\r\x1b[K[########################] 4/4 files" in shown
    assert "/s" in shown and "left" in shown and "progress:" not in shown


def _read_all(descriptor: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(descriptor, 65536)
        except OSError:  # the other side is closed: Linux answers EIO
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def _stored_count(api_url: str, username: str) -> int:
    with Client(api_url, username=username, password=PASSWORD) as client:
        return sum(1 for _ in client.images())


def _interrupt_after(args: list[str], env: dict, api_url: str, username: str, *, at_least: int, sig: int):
    process = subprocess.Popen(
        [sys.executable, "-m", "tagsmith_client", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    eventually_blocking(
        lambda: _stored_count(api_url, username) >= at_least or process.poll() is not None,
        awaiting=f"the import to store {at_least} images",
        within=240,
        interval=0.1,
    )
    assert process.poll() is None, "the import finished before it could be interrupted"
    process.send_signal(sig)
    stdout, _ = process.communicate(timeout=120)
    return process.returncode, stdout.decode()


def test_an_interrupted_import_resumes_and_completes(account, api_url, tmp_path):
    username, env = account
    photo_tree(tmp_path / "photos", 60, seed=2)
    args = ["upload", "-r", "-j", "1", str(tmp_path / "photos")]
    # A crash first (nothing reported), then Ctrl-C (in-flight uploads finish, the rest are left for later).
    code, _ = _interrupt_after(args, env, api_url, username, at_least=5, sig=signal.SIGKILL)
    assert code == -signal.SIGKILL
    after_crash = _stored_count(api_url, username)
    code, stdout = _interrupt_after(args, env, api_url, username, at_least=after_crash + 5, sig=signal.SIGINT)
    assert code == 130
    assert "run the same command again to carry on" in stdout
    interrupted_at = _stored_count(api_url, username)
    assert 10 <= interrupted_at < 60

    resumed = tagsmith(*args[:-1], "--json", args[-1], env=env)
    assert resumed.returncode == 0, resumed.stderr
    summary = json_lines(resumed.stdout)[-1]["summary"]
    assert summary["duplicate"] == interrupted_at
    assert summary["new"] == 60 - interrupted_at
    assert _stored_count(api_url, username) == 60


def test_refused_files_are_reported_with_reasons_and_a_failing_exit(account, tmp_path):
    _, env = account
    folder = tmp_path / "mixed"
    photo_tree(folder, 3, seed=3)
    (folder / "broken.jpg").write_text("this is not a photograph")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not picked up by a folder walk")
    (folder / ".hidden.jpg").write_text("nor are hidden files")
    run = tagsmith("upload", "-r", "--json", str(folder), str(tmp_path / "missing.jpg"), env=env)
    assert run.returncode == 1
    *files, summary = json_lines(run.stdout)
    by_name = {Path(f["path"]).name: f for f in files}
    assert set(by_name) == {"photo000.jpg", "photo001.jpg", "photo002.jpg", "broken.jpg", "empty.png", "missing.jpg"}
    assert by_name["broken.jpg"]["status"] == "refused"
    assert "not a supported image" in by_name["broken.jpg"]["error"]
    assert by_name["empty.png"]["status"] == "refused" and by_name["empty.png"]["error"]
    assert by_name["missing.jpg"] == by_name["missing.jpg"] | {"status": "failed", "error": "no such file or folder"}
    assert summary["summary"]["new"] == 3 and summary["summary"]["refused"] == 2 and summary["summary"]["failed"] == 1

    text = tagsmith("upload", "-r", str(folder), env=env)
    assert text.returncode == 1
    assert "3 already there, 2 refused, 0 failed" in text.stdout
    assert f"refused: {folder / 'broken.jpg'}: not a supported image" in text.stdout
    assert "is a folder; pass -r" in tagsmith("upload", "--json", str(folder), env=env).stdout


def test_login_keeps_a_private_session_that_refreshes_and_logout_ends_it(api, api_url, tmp_path):
    username = register(api)
    env = cli_env(api_url, tmp_path / "config")
    assert "not logged in" in tagsmith("ls", env=env).stderr
    login = tagsmith("login", "--username", username, "--password-stdin", env=env, stdin=PASSWORD + "\n")
    assert login.returncode == 0, login.stderr
    session_file = tmp_path / "config" / "tagsmith" / "session.json"
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    saved = json.loads(session_file.read_text())[api_url]
    assert saved["username"] == username

    # An expired access token is renewed with the refresh token, which rotates.
    session_file.write_text(json.dumps({api_url: saved | {"expires_at": 0}}))
    listed = tagsmith("ls", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    renewed = json.loads(session_file.read_text())[api_url]
    assert renewed["refresh_token"] != saved["refresh_token"]
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600

    assert tagsmith("logout", env=env).returncode == 0
    assert api_url not in json.loads(session_file.read_text())
    spent = api.post("/v1/auth/refresh", json={"refresh_token": renewed["refresh_token"]})
    assert spent.status_code == 401
    after = tagsmith("ls", env=env)
    assert after.returncode == 1 and "not logged in" in after.stderr


def test_browse_tag_get_and_remove(account, api_url, tmp_path):
    _, env = account
    chelsea = tmp_path / "chelsea.png"
    chelsea.write_bytes((Path(skimage.data.__file__).parent / "chelsea.png").read_bytes())
    photo_tree(tmp_path / "more", 2, seed=4)
    assert tagsmith("upload", "-q", "-r", str(chelsea), str(tmp_path / "more"), env=env).returncode == 0

    listed = json_lines(tagsmith("ls", "--json", env=env).stdout)
    assert len(listed) == 3
    cat = next(image for image in listed if image["filename"] == "chelsea.png")
    assert cat["category"] in ("tabby", "tiger cat", "Egyptian cat")
    by_category = json_lines(tagsmith("ls", "--json", "--category", cat["category"], env=env).stdout)
    assert cat["uid"] in {image["uid"] for image in by_category}
    assert {image["category"] for image in by_category} == {cat["category"]}
    assert cat["uid"] in {image["uid"] for image in json_lines(tagsmith("search", "cat", "--json", env=env).stdout)}
    # Nothing found is said on stderr, for people; stdout stays empty for scripts, and --json says nothing extra.
    nothing = tagsmith("search", "qwertyuiop", env=env)
    assert (nothing.returncode, nothing.stdout) == (0, "") and 'no images match "qwertyuiop"' in nothing.stderr
    nothing_json = tagsmith("search", "qwertyuiop", "--json", env=env)
    assert (nothing_json.stdout, nothing_json.stderr) == ("", "")
    assert 'no images with tag "qwertyuiop"' in tagsmith("ls", "--tag", "qwertyuiop", env=env).stderr
    shown = tagsmith("show", cat["uid"], "--json", env=env)
    assert shown.stdout, (shown.returncode, shown.stderr)
    assert json_lines(shown.stdout)[0]["sha256"] == cat["sha256"]
    assert cat["category"] in tagsmith("show", cat["uid"], env=env).stdout

    tagged = json_lines(tagsmith("tag", cat["uid"], "+sofa", "+Nap", "--json", env=env).stdout)[0]
    assert tagged["manual_tags"] == ["sofa", "nap"]
    untagged = json_lines(tagsmith("tag", cat["uid"], "-nap", "--json", env=env).stdout)[0]
    assert untagged["manual_tags"] == ["sofa"]
    assert [image["uid"] for image in json_lines(tagsmith("ls", "--tag", "sofa", "--json", env=env).stdout)] == [
        cat["uid"]
    ]
    assert {"tag": "sofa", "count": 1} in json_lines(tagsmith("tags", "--json", env=env).stdout)
    counts = json_lines(tagsmith("categories", "--json", env=env).stdout)
    assert sum(entry["count"] for entry in counts) == 3

    target = tmp_path / "copy.png"
    fetched = json_lines(tagsmith("get", cat["uid"], "-o", str(target), "--json", env=env).stdout)[0]
    assert target.read_bytes() == chelsea.read_bytes() and fetched["bytes"] == chelsea.stat().st_size

    removed = tagsmith("rm", cat["uid"], "AAAAAAAAAAAAAAAAAAAAAA", "--json", env=env)
    assert removed.returncode == 1
    outcome = {line["uid"]: line for line in json_lines(removed.stdout)}
    assert outcome[cat["uid"]]["status"] == "removed"
    assert outcome["AAAAAAAAAAAAAAAAAAAAAA"] == outcome["AAAAAAAAAAAAAAAAAAAAAA"] | {"status": "failed"}
    missing = tagsmith("show", cat["uid"], "--json", env=env)
    assert missing.returncode == 1
    assert json_lines(missing.stdout)[0]["error"]["code"] == "not_found"


def test_the_library_raises_the_apis_error_code_and_message(account, api_url):
    username, _ = account
    with Client(api_url, username=username, password=PASSWORD) as client:
        with pytest.raises(ApiError) as missing:
            client.image("AAAAAAAAAAAAAAAAAAAAAA")
        assert (missing.value.status, missing.value.code, missing.value.message) == (404, "not_found", "no such image")
        with pytest.raises(ApiError) as too_many:
            client._json("POST", "/v1/images/digests", json={"sha256": ["ab" * 32] * 1001})
        assert too_many.value.status == 400 and "1000" in too_many.value.message
        uploaded = client.upload(io.BytesIO(_jpeg()), filename="small.jpg")
        assert client.find_digests([uploaded.sha256, "cd" * 32]) == {
            uploaded.sha256: client.find_digests([uploaded.sha256.upper()])[uploaded.sha256]
        }
        assert client.find_digests([uploaded.sha256])[uploaded.sha256].uid == uploaded.uid


def test_another_users_digests_stay_unknown(api, api_url):
    alice, bob = register(api), register(api)
    with Client(api_url, username=alice, password=PASSWORD) as client:
        digest = client.upload(io.BytesIO(_jpeg(9)), filename="mine.jpg").sha256
    with Client(api_url, username=bob, password=PASSWORD) as client:
        assert client.find_digests([digest]) == {}


def _jpeg(seed: int = 5) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (seed * 20 % 256, 90, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


GRPC_CALL = """
import json, sys, grpc
from tagsmith.catalog.v1 import catalog_pb2, catalog_pb2_grpc
address, token = sys.argv[1:]
with grpc.insecure_channel(address) as channel:
    catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
    request = catalog_pb2.ListImagesRequest(page_size=5)
    reply = catalog.ListImages(request, metadata=[("authorization", f"Bearer {token}")])
print(json.dumps({"module": catalog_pb2.__file__, "uids": [image.uid for image in reply.images]}))
"""


def test_the_grpc_stubs_package_calls_the_catalog_with_a_token(stack, api, tmp_path):
    repo = Path(__file__).resolve().parents[2]
    built = subprocess.run(
        [sys.executable, str(repo / "clients" / "grpc" / "build_wheel.py"), str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        check=True,
    )
    site = tmp_path / "site"
    zipfile.ZipFile(built.stdout.strip()).extractall(site)
    username = register(api)
    token = api.post("/v1/auth/login", json={"username": username, "password": PASSWORD}).json()["access_token"]
    with Client(stack.gateway_url, token=token) as client:
        uid = client.upload(io.BytesIO(_jpeg(11)), filename="grpc.jpg").uid
    env = os.environ | {"PYTHONPATH": str(site)}
    call = [sys.executable, "-c", GRPC_CALL, stack.addresses["catalog"][0], token]
    answer = json.loads(subprocess.run(call, env=env, capture_output=True, text=True, check=True).stdout)
    assert answer["module"].startswith(str(site))
    assert answer["uids"] == [uid]
