"""tagsmith_client's retries and token renewal, against a real HTTP server that answers from a script."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tagsmith_client import ApiError, Client, Session
from tagsmith_client.config import SavedSession, SessionStore

from tests.support.clock import FakeClock

CATEGORIES = (200, {}, {"categories": [{"category": "tabby", "count": 2}]})
UNAVAILABLE = {"error": {"code": "unavailable", "message": "a backend service is unavailable", "request_id": "r"}}
TOKENS = {"access_token": "new-access", "refresh_token": "new-refresh", "expires_in": 900, "refresh_expires_in": 9}
UPLOADED = {"uid": "u" * 22, "filename": "a.jpg", "sha256": "ab" * 32, "duplicate": False}


class ScriptedServer:
    """Answers each request with the next (status, headers, JSON) of `script`; records what was asked."""

    def __init__(self, script: list[tuple[int, dict, dict]]) -> None:
        self.script, self.requests = list(script), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                server.requests.append((time.monotonic(), self.command, self.path, dict(self.headers), body))
                status, headers, payload = server.script.pop(0)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        # shutdown() waits out the current poll interval (0.5 s by default) in every test's teardown.
        serve = {"poll_interval": 0.02}
        threading.Thread(target=self._httpd.serve_forever, kwargs=serve, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def scripted():
    servers = []

    def start(*script):
        servers.append(ScriptedServer(list(script)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_503_is_retried_after_the_time_retry_after_asks(scripted):
    server = scripted((503, {"Retry-After": "1"}, UNAVAILABLE), CATEGORIES)
    with Client(server.url, token="t") as client:
        assert [(c.name, c.count) for c in client.categories()] == [("tabby", 2)]
    (first, *_), (second, *_) = server.requests
    assert second - first >= 1.0


def test_429_is_retried_until_it_passes(scripted):
    busy = (429, {"Retry-After": "0"}, {"error": {"code": "resource_exhausted", "message": "slow down"}})
    server = scripted(busy, busy, busy, CATEGORIES)
    with Client(server.url, token="t") as client:
        assert client.categories()[0].count == 2
    assert len(server.requests) == 4


def test_when_retries_run_out_the_apis_code_and_message_are_raised(scripted):
    server = scripted(*[(503, {"Retry-After": "0"}, UNAVAILABLE)] * 3)
    with Client(server.url, token="t", retries=2) as client, pytest.raises(ApiError) as failure:
        client.categories()
    assert (failure.value.status, failure.value.code) == (503, "unavailable")
    assert failure.value.message == "a backend service is unavailable"


def test_an_upload_retried_sends_the_whole_file_again(scripted, tmp_path):
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"\xff\xd8" + bytes(range(256)) * 300)
    server = scripted((503, {"Retry-After": "0"}, UNAVAILABLE), (201, {}, UPLOADED))
    sent = []
    with Client(server.url, token="t") as client:
        assert client.upload(photo, progress=sent.append).uid == "u" * 22
    first, second = (request[4] for request in server.requests)
    assert photo.read_bytes() in first and photo.read_bytes() in second
    assert sum(sent) == 2 * photo.stat().st_size


def test_a_refused_access_token_is_renewed_once_with_the_refresh_token(scripted):
    expired = (401, {}, {"error": {"code": "unauthenticated", "message": "token expired"}})
    server = scripted(expired, (200, {}, TOKENS), CATEGORIES)
    saved = []
    with Client(server.url, token="old", refresh_token="refresh-1", on_session=saved.append) as client:
        client.categories()
    paths = [(request[1], request[2]) for request in server.requests]
    assert paths == [("GET", "/v1/categories"), ("POST", "/v1/auth/refresh"), ("GET", "/v1/categories")]
    assert json.loads(server.requests[1][4]) == {"refresh_token": "refresh-1"}
    assert server.requests[2][3]["Authorization"] == "Bearer new-access"
    assert [s.refresh_token for s in saved] == ["new-refresh"]


def test_a_renewed_token_is_kept_through_later_retries(scripted):
    expired = (401, {}, {"error": {"code": "unauthenticated", "message": "token expired"}})
    busy = (503, {"Retry-After": "0"}, UNAVAILABLE)
    server = scripted(expired, (200, {}, TOKENS), busy, CATEGORIES)
    with Client(server.url, token="old", refresh_token="refresh-1") as client:
        client.categories()
    paths = [request[2] for request in server.requests]
    assert paths == ["/v1/categories", "/v1/auth/refresh", "/v1/categories", "/v1/categories"]
    assert server.requests[3][3]["Authorization"] == "Bearer new-access"


def test_a_session_renewed_by_another_process_is_adopted_not_renewed_again(scripted, tmp_path):
    server = scripted((200, {}, TOKENS), CATEGORIES, CATEGORIES)
    store = SessionStore(tmp_path)
    clock = FakeClock(time.time())
    # Usable for one more second (renewal starts 30 s before expiry).
    store.save(server.url, Session("old", "refresh-1", clock() + 31))
    first = Client(server.url, keeper=SavedSession(store, server.url), clock=clock)
    second = Client(server.url, keeper=SavedSession(store, server.url), clock=clock)
    second.authenticate()  # holds the old pair now
    clock.advance(2)
    first.categories()
    second.categories()
    assert [request[2] for request in server.requests] == ["/v1/auth/refresh", "/v1/categories", "/v1/categories"]
    assert {request[3]["Authorization"] for request in server.requests[1:]} == {"Bearer new-access"}
    assert store.load(server.url)["refresh_token"] == "new-refresh"
