"""How failures are sorted: inference errors by what to do next, internal errors by the status a caller sees."""

import grpc
import psycopg
import pytest
from psycopg_pool import PoolTimeout

from services.catalog import inference_client, pagination, servicer
from services.catalog.blobstore import BlobStoreUnavailable
from services.catalog.terms import InvalidTag
from services.common import interceptors


def _rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="detail")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.UNAVAILABLE, inference_client.InferenceUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, inference_client.InferenceUnavailable),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, inference_client.InferenceUnavailable),
        (grpc.StatusCode.UNAUTHENTICATED, inference_client.InferenceTokenRefused),
        (grpc.StatusCode.INVALID_ARGUMENT, inference_client.InferenceRejected),
        (grpc.StatusCode.INTERNAL, inference_client.InferenceFailed),
        (grpc.StatusCode.UNKNOWN, inference_client.InferenceFailed),
    ],
)
def test_inference_errors_are_sorted_by_what_to_do_next(code, kind):
    with pytest.raises(kind):
        inference_client._raise_for(_rpc_error(code))


def test_token_refusal_counts_as_unavailable():
    assert issubclass(inference_client.InferenceTokenRefused, inference_client.InferenceUnavailable)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (pagination.InvalidPage("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (InvalidTag("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (BlobStoreUnavailable("down"), grpc.StatusCode.UNAVAILABLE),
        (inference_client.InferenceUnavailable("down"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_expected_failures_map_to_status_codes(error, code):
    assert servicer._status_error(error).code == code


def test_unexpected_errors_are_left_to_the_interceptor():
    # The shared interceptor answers INTERNAL without details for anything unmapped.
    error = RuntimeError("secret")
    assert servicer._status_error(error) is error


@pytest.mark.parametrize("error", [psycopg.OperationalError("gone"), PoolTimeout("no connection in 2 s")])
def test_database_failures_are_mapped_once_by_the_shared_interceptor(error):
    """The catalog leaves them to services/common, which answers UNAVAILABLE for every service alike."""
    assert servicer._status_error(error) is error
    assert interceptors._database_unreachable(error)
    assert not interceptors._database_unreachable(RuntimeError("other"))
