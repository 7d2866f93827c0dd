"""FindDigests: which content hashes the caller already has, through a real catalog server and PostgreSQL."""

import hashlib

import grpc
import pytest
from tagsmith.catalog.v1 import catalog_pb2

from tests.support.images import image_bytes


@pytest.fixture
async def catalog(catalog_server, scripted_inference):
    _, address = await scripted_inference()
    return await catalog_server(inference_addr=address)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_only_the_callers_own_digests_are_known(catalog, test_keys):
    alice, bob = catalog.client(test_keys.token("alice")), catalog.client(test_keys.token("bob"))
    mine, theirs, nobodys = (image_bytes((n, 9, 9), fmt="PNG") for n in (1, 2, 3))
    uploaded = await alice.upload(mine)
    await bob.upload(theirs)
    request = catalog_pb2.FindDigestsRequest(sha256=[_sha(mine).upper(), _sha(theirs), _sha(nobodys), _sha(mine)])
    reply = await alice.FindDigests(request)
    assert [(k.sha256, k.uid) for k in reply.known] == [(_sha(mine), uploaded.uid)]


async def test_an_admin_sees_only_their_own_digests_too(catalog, test_keys):
    bob = catalog.client(test_keys.token("bob"))
    data = image_bytes((4, 9, 9), fmt="PNG")
    await bob.upload(data)
    admin = catalog.client(test_keys.token("root", roles=["admin"]))
    reply = await admin.FindDigests(catalog_pb2.FindDigestsRequest(sha256=[_sha(data)]))
    assert list(reply.known) == []


async def test_a_deleted_image_is_no_longer_known(catalog, test_keys):
    alice = catalog.client(test_keys.token("alice"))
    data = image_bytes((5, 9, 9), fmt="PNG")
    image = await alice.upload(data)
    await alice.DeleteImage(catalog_pb2.DeleteImageRequest(uid=image.uid))
    reply = await alice.FindDigests(catalog_pb2.FindDigestsRequest(sha256=[_sha(data)]))
    assert list(reply.known) == []


@pytest.mark.parametrize(
    ("digests", "message"),
    [
        (["ab" * 32] * 1001, "at most 1000 digests"),
        (["not-a-digest"], "is not a SHA-256 digest"),
        (["g" * 64], "is not a SHA-256 digest"),
    ],
)
async def test_bad_requests_are_invalid_argument(catalog, test_keys, digests, message):
    alice = catalog.client(test_keys.token("alice"))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await alice.FindDigests(catalog_pb2.FindDigestsRequest(sha256=digests))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in failure.value.details()
