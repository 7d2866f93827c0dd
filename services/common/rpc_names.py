"""gRPC service and method names read from the generated descriptors, so a renamed service or method fails at import
instead of leaving a name nothing answers to."""

from google.protobuf.descriptor import ServiceDescriptor


def method_path(service: ServiceDescriptor, method: str) -> str:
    """The path a call travels under, "/package.Service/Method", as interceptors see it; KeyError for a method
    the service does not have."""
    return f"/{service.full_name}/{service.methods_by_name[method].name}"
