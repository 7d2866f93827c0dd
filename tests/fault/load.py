"""Upload load: a few users uploading distinct real photos and one reading, every answer recorded with its timing."""

import hashlib
import io
import itertools
import random
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field

import httpx
from PIL import Image

PASSWORD = "correct horse battery staple"
UPLOADERS = 3
# Pause between one client's requests: steady load that leaves a two-core machine room to restart services.
PACE_SECONDS = 0.25
# Pause after a failed request, so clients keep probing an outage without spinning.
BACKOFF_SECONDS = 0.2


@dataclass(frozen=True)
class Photo:
    filename: str
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class Photos:
    """scikit-image's photographs, each upload made distinct by a comment carrying a serial number."""

    def __init__(self) -> None:
        from skimage import data

        self._jpegs = {name: _jpeg(getattr(data, name)()) for name in ("astronaut", "coffee", "rocket")}
        self._png = _png_file("chelsea.png")
        self._serial = itertools.count()
        self._lock = threading.Lock()

    def next(self) -> Photo:
        with self._lock:
            serial = next(self._serial)
        marker = f"fault-trial {serial} {uuid.uuid4().hex}".encode()
        if serial % 4 == 3:
            return Photo(f"chelsea-{serial}.png", "image/png", _with_png_text(self._png, marker))
        name = sorted(self._jpegs)[serial % 4 % 3]
        return Photo(f"{name}-{serial}.jpg", "image/jpeg", _with_jpeg_comment(self._jpegs[name], marker))


def _jpeg(pixels) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def _png_file(name: str) -> bytes:
    from pathlib import Path

    import skimage.data

    return (Path(skimage.data.__file__).parent / name).read_bytes()


def _with_jpeg_comment(jpeg: bytes, text: bytes) -> bytes:
    """A COM segment right after the start-of-image marker: same picture, different bytes."""
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + jpeg[2:]


def _with_png_text(png: bytes, text: bytes) -> bytes:
    """A tEXt chunk right after IHDR (8-byte signature, then IHDR's 25 bytes)."""
    body = b"Comment\x00" + text
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    return png[:33] + chunk + png[33:]


@dataclass(frozen=True)
class User:
    username: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Answer:
    """One request and what came back: an HTTP status, or `failure` ("timeout", "connection") when nothing did."""

    kind: str
    user: str
    started: float
    finished: float
    status: int | None
    retry_after: str | None = None
    failure: str = ""
    detail: str = ""

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    def describe(self) -> str:
        outcome = self.status if self.status is not None else self.failure
        return f"{self.kind} -> {outcome} after {self.seconds:.1f}s {self.detail[:160]}"


@dataclass(frozen=True)
class Ack:
    """An upload the system acknowledged with 201."""

    uid: str
    user: str
    photo: Photo
    started: float
    answered: float
    status: str


@dataclass
class Record:
    """Everything the clients saw, appended from several threads."""

    answers: list[Answer] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, answer: Answer, ack: Ack | None = None) -> None:
        with self.lock:
            self.answers.append(answer)
            if ack is not None:
                self.acks.append(ack)

    def answers_between(self, start: float, end: float) -> list[Answer]:
        """Answers to requests that were in flight at any moment of [start, end]."""
        with self.lock:
            return [a for a in self.answers if a.finished >= start and a.started <= end]

    def answers_started_after(self, since: float) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if a.started >= since]

    def acks_started_between(self, start: float, end: float) -> list[Ack]:
        with self.lock:
            return [a for a in self.acks if start <= a.started <= end]


def sign_up(client: httpx.Client) -> User:
    username = f"fault_{uuid.uuid4().hex[:10]}"
    created = client.post("/v1/auth/register", json={"username": username, "password": PASSWORD})
    assert created.status_code == 201, created.text
    login = client.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return User(username, {"Authorization": f"Bearer {login.json()['access_token']}"})


class Load:
    """UPLOADERS users uploading in a loop and one user listing and downloading its own images."""

    def __init__(self, base_url: str, *, limits: dict[str, float]) -> None:
        """`limits`: seconds a client waits for each kind of request ("upload", "list", "download")."""
        self.base_url = base_url
        self.limits = limits
        self.record = Record()
        self.photos = Photos()
        self.users: list[User] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "Load":
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            self.users = [sign_up(client) for _ in range(UPLOADERS)]
        for user in self.users:
            self._spawn(self._upload_loop, user)
        self._spawn(self._read_loop, self.users[0])
        return self

    def _spawn(self, target, user: User) -> None:
        thread = threading.Thread(target=target, args=(user,), name=f"load-{user.username}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=max(self.limits.values()) + 5)
        self._threads = []

    def user(self, username: str) -> User:
        return next(user for user in self.users if user.username == username)

    # ---- the clients ----

    def _upload_loop(self, user: User) -> None:
        with httpx.Client(base_url=self.base_url) as client:
            while not self._stop.is_set():
                photo = self.photos.next()
                files = {"image": (photo.filename, photo.data, photo.content_type)}
                answer, reply = self._request(client, "upload", user, "POST", "/v1/images", files=files)
                ack = None
                if answer.status == 201:
                    body = reply.json()
                    ack = Ack(body["uid"], user.username, photo, answer.started, answer.finished, body["status"])
                self.record.add(answer, ack)
                self._stop.wait(PACE_SECONDS)
                self._pause_after(answer)

    def _read_loop(self, user: User) -> None:
        with httpx.Client(base_url=self.base_url) as client:
            while not self._stop.is_set():
                answer, reply = self._request(client, "list", user, "GET", "/v1/images", params={"page_size": 20})
                self.record.add(answer)
                if answer.status == 200 and (images := reply.json()["images"]):
                    self._download_one(client, user, random.choice(images))
                self._stop.wait(PACE_SECONDS)
                self._pause_after(answer)

    def _download_one(self, client: httpx.Client, user: User, image: dict) -> None:
        answer, reply = self._request(client, "download", user, "GET", f"/v1/images/{image['uid']}/content")
        if answer.status == 200 and hashlib.sha256(reply.content).hexdigest() != image["sha256"]:
            answer = Answer(**{**answer.__dict__, "status": None, "failure": "corrupt", "detail": image["uid"]})
        self.record.add(answer)

    def _request(self, client: httpx.Client, kind: str, user: User, method: str, url: str, **kwargs):
        started = time.monotonic()
        try:
            reply = self._send(client, method, url, headers=user.headers, timeout=self.limits[kind], **kwargs)
        except httpx.TimeoutException as exc:
            return Answer(
                kind, user.username, started, time.monotonic(), None, failure="timeout", detail=repr(exc)
            ), None
        except httpx.TransportError as exc:
            failure = Answer(
                kind, user.username, started, time.monotonic(), None, failure="connection", detail=repr(exc)
            )
            return failure, None
        detail = "" if reply.is_success else reply.text
        answer = Answer(
            kind,
            user.username,
            started,
            time.monotonic(),
            reply.status_code,
            reply.headers.get("retry-after"),
            "",
            detail,
        )
        return answer, reply

    @staticmethod
    def _send(client: httpx.Client, method: str, url: str, **kwargs) -> httpx.Response:
        """One request; a GET is sent again once when a kept-alive connection turns out closed before any answer,
        as HTTP clients do for idempotent requests (RFC 9112, section 9.3.1)."""
        try:
            return client.request(method, url, **kwargs)
        except httpx.RemoteProtocolError as exc:
            if method != "GET" or "without sending a response" not in str(exc):
                raise
        return client.request(method, url, **kwargs)

    def _pause_after(self, answer: Answer) -> None:
        if answer.status not in (200, 201):
            self._stop.wait(BACKOFF_SECONDS)
