"""Client: typed methods over Tagsmith's HTTP API, with token refresh, retries and streamed transfers."""

import contextlib
import mimetypes
import os
import random
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote

import httpx

from tagsmith_client.errors import ApiError, ConnectionFailed, NotLoggedIn, api_error
from tagsmith_client.models import Count, Image, KnownDigest, Limits, Session, User

DEFAULT_URL = "http://127.0.0.1:8080"
# The server's own bound on one digests query.
DIGESTS_PER_REQUEST = 1000
PAGE_SIZE = 100
CHUNK_BYTES = 1024 * 1024
# Files up to this size are uploaded from one buffer (one write, read by the server in one piece); larger ones
# stream from disk 64 KiB at a time, so memory stays bounded whatever the file.
WHOLE_BODY_BYTES = 4 * 1024 * 1024
RETRY_STATUSES = frozenset({429, 503})
# An access token this close to its expiry is renewed before use rather than sent and refused.
EXPIRY_MARGIN_SECONDS = 30.0

Progress = Callable[[int], None]


class SessionKeeper(Protocol):
    """Where a session is kept between processes. Renewal happens inside `locked()`, after `load()`, because a
    refresh token is spent by its first use: two processes must never both renew with the same one."""

    def locked(self) -> AbstractContextManager[object]: ...

    def load(self) -> Session | None: ...

    def save(self, session: Session) -> None: ...


class _Counting:
    """A binary file that reports each read's size, so an upload's progress follows the bytes actually sent."""

    def __init__(self, file: BinaryIO, progress: Progress | None) -> None:
        self._file, self._progress = file, progress

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if self._progress is not None and data:
            self._progress(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()


class Client:
    """One Tagsmith server. Thread-safe: several threads may upload through one client at once.

    Authenticate with `token` (an access token), `refresh_token` (renewed as needed; `on_session` receives each
    new pair, e.g. to save it), or `username` and `password` (logged in on first use and again when the session
    ends). A `keeper` stores the session where several processes share it (the CLI's config file). 429 and 503
    answers are retried, honouring Retry-After, up to `retries` times.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        token_expires_at: float | None = None,
        refresh_token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        on_session: Callable[[Session], None] | None = None,
        keeper: SessionKeeper | None = None,
        timeout: float = 120.0,
        retries: int = 8,
        max_retry_wait: float = 60.0,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url.rstrip("/")
        self._clock = clock  # epoch seconds, as in `expires_at`
        self._http = http or httpx.Client(
            base_url=self.url,
            timeout=timeout,
            # Without TCP_NODELAY the last partial segment of a request waits for the server's delayed ACK: on a
            # small upload that wait is a large part of the whole request.
            transport=httpx.HTTPTransport(
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            ),
        )
        self._access = token
        self._expires_at = token_expires_at if token_expires_at is not None else (float("inf") if token else 0.0)
        self._refresh = refresh_token
        self._credentials = (username, password) if username and password else None
        self._on_session = on_session
        self._keeper = keeper
        self._lock = threading.Lock()
        self._retries = retries
        self._max_retry_wait = max_retry_wait

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- sessions --------------------------------------------------------------------------------

    @property
    def session(self) -> Session | None:
        """The current token pair, when there is a refresh token."""
        if not (self._access and self._refresh):
            return None
        return Session(self._access, self._refresh, self._expires_at)

    def login(self, username: str, password: str) -> Session:
        """Exchanges credentials for a token pair, which this client then uses."""
        body = {"username": username, "password": password}
        return self._adopt(self._json("POST", "/v1/auth/login", auth=False, json=body))

    def logout(self) -> None:
        """Ends the session on the server (idempotent) and forgets the tokens."""
        if self._refresh:
            self._json("POST", "/v1/auth/logout", json={"refresh_token": self._refresh})
        self._access, self._refresh, self._expires_at = None, None, 0.0

    def authenticate(self) -> None:
        """Makes sure of a usable access token now, refreshing or logging in when needed."""
        self._token()

    def me(self) -> User:
        data = self._json("GET", "/v1/me")
        return User(id=data["id"], username=data["username"], roles=list(data.get("roles", [])))

    def _adopt(self, data: dict[str, Any]) -> Session:
        session = Session(data["access_token"], data["refresh_token"], self._clock() + float(data["expires_in"]))
        self._access, self._refresh, self._expires_at = session.access_token, session.refresh_token, session.expires_at
        if self._keeper is not None:
            self._keeper.save(session)
        if self._on_session is not None:
            self._on_session(session)
        return session

    def _token(self, stale: str | None = None) -> str:
        """A usable access token; `stale` is one the server just refused, so it must not be returned again."""
        with self._lock:
            if self._usable(stale):
                return self._access
            with self._keeper.locked() if self._keeper else contextlib.nullcontext():
                if self._keeper is not None:
                    self._take_saved(stale)
                    if self._usable(stale):
                        return self._access
                return self._obtain(stale)

    def _usable(self, stale: str | None) -> bool:
        return bool(self._access) and self._access != stale and self._clock() < self._expires_at - EXPIRY_MARGIN_SECONDS

    def _take_saved(self, stale: str | None) -> None:
        """Adopts the kept pair: another process may have renewed it, spending the refresh token held here."""
        saved = self._keeper.load()
        if saved is not None and saved.access_token != stale:
            self._access, self._refresh, self._expires_at = saved.access_token, saved.refresh_token, saved.expires_at

    def _obtain(self, stale: str | None) -> str:
        if self._refresh:
            self._renew()
        elif self._credentials:
            self.login(*self._credentials)
        elif not self._access or self._access == stale:
            raise NotLoggedIn("not logged in: run `tagsmith login`, or set TAGSMITH_USERNAME and TAGSMITH_PASSWORD")
        return self._access

    def _renew(self) -> None:
        try:
            self._adopt(self._json("POST", "/v1/auth/refresh", auth=False, json={"refresh_token": self._refresh}))
        except ApiError as exc:
            if exc.status != 401:
                raise
            self._refresh = None
            if not self._credentials:
                raise NotLoggedIn("the session has ended: run `tagsmith login` again") from exc
            self.login(*self._credentials)

    def _renewable(self) -> bool:
        return bool(self._refresh or self._credentials)

    # --- transport -------------------------------------------------------------------------------

    def _send(
        self, method: str, path: str, *, auth: bool = True, body: Callable[[], dict] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """The response, still streaming; raises ApiError for an error answer once retries are spent.

        `body` builds the request content afresh for each attempt (an upload reopens its file).
        """
        token, refused = None, None
        for attempt in range(self._retries + 1):
            headers = {}
            if auth:
                token = self._token(stale=refused)
                headers["Authorization"] = f"Bearer {token}"
            content = body() if body else {}
            headers.update(content.pop("headers", {}))
            try:
                request = self._http.build_request(method, path, headers=headers, **kwargs, **content)
                response = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                if attempt == self._retries:
                    raise ConnectionFailed(f"cannot reach {self.url}: {exc or type(exc).__name__}") from exc
                time.sleep(_backoff(attempt))
                continue
            if response.status_code == 401 and auth and refused is None and self._renewable():
                response.close()
                refused = token
                continue
            if response.status_code in RETRY_STATUSES and attempt < self._retries:
                wait = _retry_after(response)
                wait = _backoff(attempt) if wait is None else wait
                response.close()
                time.sleep(min(wait, self._max_retry_wait))
                continue
            if response.status_code >= 400:
                raise _error_of(response)
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        try:
            response.read()
        finally:
            response.close()
        return response.json() if response.content else None

    # --- images ----------------------------------------------------------------------------------

    def upload(
        self,
        file: str | os.PathLike | BinaryIO,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        progress: Progress | None = None,
    ) -> Image:
        """Stores one image, streaming it from disk; `duplicate` is True when the same bytes were already there."""
        if hasattr(file, "read"):
            name = filename or Path(str(getattr(file, "name", "") or "upload")).name
        else:
            name = filename or Path(file).name
        kind = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"

        def body() -> dict:
            if hasattr(file, "read"):
                file.seek(0)
                source = file
            else:
                source = open(file, "rb")  # noqa: SIM115 - closed in finally below, after the attempt
                opened.append(source)
            size = _file_size(source)
            if size is not None and size <= WHOLE_BODY_BYTES:
                return _whole_form(name, kind, source.read(), progress)
            return {"files": {"image": (name, _Counting(source, progress), kind)}}

        opened: list[BinaryIO] = []
        try:
            return Image.from_json(self._json("POST", "/v1/images", body=body))
        finally:
            for source in opened:
                source.close()

    def images(
        self, *, category: str = "", tag: str = "", min_score: float = 0.0, page_size: int = PAGE_SIZE
    ) -> Iterator[Image]:
        """The caller's images, newest first, fetched a page of `page_size` at a time as the iteration goes."""
        params = {"category": category, "tag": tag, "min_score": min_score}
        return self._pages("/v1/images", {k: v for k, v in params.items() if v}, page_size)

    def search(self, query: str, *, min_score: float = 0.0, page_size: int = PAGE_SIZE) -> Iterator[Image]:
        """Images matching every word of `query` (any case, singular or plural), best first, page by page."""
        params: dict[str, Any] = {"q": query}
        if min_score:
            params["min_score"] = min_score
        return self._pages("/v1/search", params, page_size)

    def similar(self, uid: str, *, limit: int = 20) -> list[tuple[Image, float]]:
        """Your images that look most like this one, with their similarity (0-1), most similar first."""
        page = self._json("GET", f"/v1/images/{_segment(uid)}/similar", params={"page_size": limit})
        return [(Image.from_json(found), float(found["similarity"])) for found in page["images"]]

    def duplicates(self) -> list[list[Image]]:
        """Groups of near-duplicate images (the same shot stored more than once), newest group first."""
        groups = self._json("GET", "/v1/duplicates")["groups"]
        return [[Image.from_json(image) for image in group["images"]] for group in groups]

    def _pages(self, path: str, params: dict[str, Any], page_size: int) -> Iterator[Image]:
        token = ""
        while True:
            page = self._json("GET", path, params={**params, "page_size": page_size, "page_token": token})
            yield from (Image.from_json(image) for image in page["images"])
            token = page.get("next_page_token") or ""
            if not token:
                return

    def image(self, uid: str) -> Image:
        return Image.from_json(self._json("GET", f"/v1/images/{_segment(uid)}"))

    def download(self, uid: str, target: str | os.PathLike | BinaryIO, *, progress: Progress | None = None) -> int:
        """Writes the original bytes to a path or an open binary file, chunk by chunk; returns the byte count.

        A path is written through a temporary file beside it and renamed, so a broken transfer leaves nothing.
        """
        if hasattr(target, "write"):
            return self._copy_content(uid, target, progress)
        path = Path(target)
        handle, temporary = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as file:
                size = self._copy_content(uid, file, progress)
            os.replace(temporary, path)
            return size
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _copy_content(self, uid: str, file: BinaryIO, progress: Progress | None) -> int:
        response = self._send("GET", f"/v1/images/{_segment(uid)}/content")
        size = 0
        try:
            for chunk in response.iter_bytes(CHUNK_BYTES):
                file.write(chunk)
                size += len(chunk)
                if progress is not None:
                    progress(len(chunk))
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"the download of {uid} broke off: {exc}") from exc
        finally:
            response.close()
        return size

    def delete(self, uid: str) -> None:
        self._json("DELETE", f"/v1/images/{_segment(uid)}")

    def set_tags(self, uid: str, tags: Iterable[str]) -> Image:
        """Replaces the image's manual tags."""
        return Image.from_json(self._json("PUT", f"/v1/images/{_segment(uid)}/tags", json={"tags": list(tags)}))

    def update_tags(self, uid: str, *, add: Iterable[str] = (), remove: Iterable[str] = ()) -> Image:
        """Adds and removes manual tags (read, changed, written back: the REST API replaces the whole list)."""
        gone = {tag.lower() for tag in remove}
        current = [tag for tag in self.image(uid).manual_tags if tag not in gone]
        current += [tag.lower() for tag in add if tag.lower() not in current]
        return self.set_tags(uid, current)

    def categories(self) -> list[Count]:
        """Images per category, most frequent first."""
        data = self._json("GET", "/v1/categories")
        return [Count(entry["category"], int(entry["count"])) for entry in data["categories"]]

    def tags(self) -> list[Count]:
        """Images per tag, most frequent first."""
        return [Count(entry["tag"], int(entry["count"])) for entry in self._json("GET", "/v1/tags")["tags"]]

    def limits(self) -> Limits:
        data = self._json("GET", "/v1/limits")
        return Limits(data["max_bytes"], data["max_pixels"], list(data["content_types"]), data["max_files"])

    def find_digests(self, digests: Iterable[str]) -> dict[str, KnownDigest]:
        """Which of these hex SHA-256 digests the caller's images already have, keyed by digest."""
        wanted = list(dict.fromkeys(digest.lower() for digest in digests))
        known: dict[str, KnownDigest] = {}
        for start in range(0, len(wanted), DIGESTS_PER_REQUEST):
            batch = wanted[start : start + DIGESTS_PER_REQUEST]
            for entry in self._json("POST", "/v1/images/digests", json={"sha256": batch})["known"]:
                known[entry["sha256"]] = KnownDigest(entry["sha256"], entry["uid"], entry.get("category", ""))
        return known


def _whole_form(name: str, kind: str, data: bytes, progress: Progress | None) -> dict:
    """A one-file multipart body in one buffer: the server reads it in one piece instead of several."""
    boundary = uuid.uuid4().hex
    # Escaped as browsers (and httpx) do, per the HTML form-data rules.
    quoted = name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{quoted}"\r\n'
        f"Content-Type: {kind}\r\n\r\n"
    ).encode()
    if progress is not None:
        progress(len(data))
    content = head + data + f"\r\n--{boundary}--\r\n".encode()
    return {"content": content, "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"}}


def _file_size(source: BinaryIO) -> int | None:
    """Bytes from the current position to the end, without reading them; None when the source cannot tell."""
    try:
        return os.fstat(source.fileno()).st_size - source.tell()
    except (AttributeError, OSError):
        pass
    try:
        here = source.tell()
        end = source.seek(0, os.SEEK_END)
        source.seek(here)
        return end - here
    except (AttributeError, OSError):
        return None


def _segment(uid: str) -> str:
    return quote(uid, safe="")


def _backoff(attempt: int) -> float:
    return min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_of(response: httpx.Response) -> ApiError:
    try:
        response.read()
        body = response.json()
    except (ValueError, httpx.HTTPError):
        body = None
    finally:
        response.close()
    return api_error(response.status_code, body, retry_after=_retry_after(response))
