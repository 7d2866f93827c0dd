"""Page sizes, opaque page tokens and uids: every malformed value is refused."""

import base64
import json

import pytest

from services.catalog import ids, pagination


def test_page_size_default_and_bounds():
    assert pagination.page_size(0) == 50
    assert pagination.page_size(1) == 1
    assert pagination.page_size(100) == 100
    for bad in (-1, 101, 10_000):
        with pytest.raises(pagination.InvalidPage, match="between 1 and 100"):
            pagination.page_size(bad)


def test_token_round_trip_and_binding():
    query = pagination.fingerprint("list", "alice", "", "dog", 0.0)
    token = pagination.encode(query, (0.25, 42))
    assert pagination.decode(token, query, (float, int)) == (0.25, 42)
    assert pagination.decode("", query, (int,)) is None
    other = pagination.fingerprint("list", "bob", "", "dog", 0.0)
    with pytest.raises(pagination.InvalidPage, match="does not belong"):
        pagination.decode(token, other, (float, int))


def _forge(payload) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "not base64 !!",
        "x" * 600,
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        _forge([1, 2]),
        _forge({"v": 1, "q": "Q", "c": ["1"]}),
        _forge({"v": 1, "q": "Q", "c": [True]}),
        _forge({"v": 1, "q": "Q", "c": [-5]}),
        _forge({"v": 1, "q": "Q", "c": [1, 2]}),
        _forge({"v": 2, "q": "Q", "c": [1]}),
    ],
)
def test_malformed_tokens_are_invalid(token):
    with pytest.raises(pagination.InvalidPage):
        pagination.decode(token, "Q", (int,))


def test_uids_are_random_and_validated():
    made = {ids.new_uid() for _ in range(100)}
    assert len(made) == 100
    assert all(ids.is_valid_uid(uid) for uid in made)
    for bad in ("", "short", "../../etc/passwd", "a" * 23, "A" * 21 + "/", "Zm9v" * 5 + "=="):
        assert not ids.is_valid_uid(bad)
    assert ids.is_valid_sha256("ab" * 32)
    assert not ids.is_valid_sha256("AB" * 32)
