"""Service and method names come from the generated descriptors: every name a server registers, opens or checks
health under is one its protos define."""

from pathlib import Path

import pytest
from google.protobuf import descriptor_pool
from tagsmith.auth.v1 import auth_pb2

from services.common.rpc_names import method_path


def _method_exists(path: str, pool=None) -> bool:
    service, _, method = path.removeprefix("/").partition("/")
    found = (pool or descriptor_pool.Default()).FindServiceByName(service)
    return method in found.methods_by_name


def test_method_path_is_the_path_calls_travel_under():
    service = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]
    assert method_path(service, "Login") == "/tagsmith.auth.v1.AuthService/Login"
    with pytest.raises(KeyError):
        method_path(service, "LogIn")


def test_open_methods_are_methods_of_their_service():
    from services.auth.servicer import OPEN_METHODS as AUTH_OPEN
    from services.common.interceptors import ALWAYS_OPEN_PREFIXES
    from services.inference.server import OPEN_METHODS as INFERENCE_OPEN

    assert AUTH_OPEN and INFERENCE_OPEN
    assert all(_method_exists(path) for path in AUTH_OPEN | INFERENCE_OPEN)
    health, reflection = ALWAYS_OPEN_PREFIXES
    assert _method_exists(health + "Check") and _method_exists(reflection + "ServerReflectionInfo")


def test_every_server_and_client_names_a_service_its_protos_define():
    from services.auth.servicer import SERVICE_NAME as AUTH
    from services.catalog.server import SERVICE_NAME as CATALOG
    from services.gateway.clients import AuthClient, CatalogClient, InferenceClient
    from services.inference.server import SERVICE_NAME as INFERENCE

    names = [AUTH, CATALOG, INFERENCE]
    assert [client.service_name for client in (AuthClient, CatalogClient, InferenceClient)] == names
    assert [descriptor_pool.Default().FindServiceByName(name).full_name for name in names] == names


def test_tf_serving_methods_pair_paths_with_their_messages():
    from services.inference import tfserving

    for method in (tfserving.PREDICT, tfserving.GET_MODEL_METADATA, tfserving.GET_MODEL_STATUS):
        service, _, name = method.path.removeprefix("/").partition("/")
        found = tfserving._POOL.FindServiceByName(service).methods_by_name[name]
        assert (found.input_type, found.output_type) == (method.request.DESCRIPTOR, method.response.DESCRIPTOR)
    assert tfserving.PREDICT.path.startswith(f"/{tfserving.PREDICTION_SERVICE}/")


def test_tests_name_tf_serving_methods_through_tfserving():
    """Stand-in TF Serving servers take tfserving's Methods (tests.support.inference_fixtures.stand_in_tfserving);
    a service name spelled by hand would drift from the captured descriptors unnoticed."""
    from services.inference import tfserving

    tests = Path(__file__).resolve().parents[1]
    spelled = [
        str(p.relative_to(tests)) for p in tests.rglob("*.py") if f'"{tfserving.PREDICTION_SERVICE}"' in p.read_text()
    ]
    assert spelled == []
