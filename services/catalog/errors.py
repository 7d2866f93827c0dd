"""Errors a caller can act on, each carrying the gRPC status code it is answered with."""

import grpc


class CatalogError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> CatalogError:
    return CatalogError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found() -> CatalogError:
    # The same words whether the uid never existed or belongs to someone else.
    return CatalogError(grpc.StatusCode.NOT_FOUND, "no such image")
