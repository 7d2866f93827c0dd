"""Writes TensorFlow Serving's API message descriptors to a FileDescriptorSet: capture_tfserving_descriptors.py OUT."""

import argparse
import importlib
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

# The modules whose messages and services the inference service speaks; their imports pull in the rest.
API_MODULES = (
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
    "tensorflow_serving.apis.model_service_pb2",
    "tensorflow_serving.apis.prediction_service_pb2",
)


def in_dependency_order(roots: list[FileDescriptor]) -> list[FileDescriptor]:
    """Every file the roots need, each after all of its own dependencies (depth-first post-order)."""
    ordered: list[FileDescriptor] = []
    seen: set[str] = set()

    def visit(file: FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            visit(dependency)
        ordered.append(file)

    for root in roots:
        visit(root)
    return ordered


def descriptor_set(module_names: tuple[str, ...] = API_MODULES) -> descriptor_pb2.FileDescriptorSet:
    roots = [importlib.import_module(name).DESCRIPTOR for name in module_names]
    result = descriptor_pb2.FileDescriptorSet()
    for file in in_dependency_order(roots):
        file.CopyToProto(result.file.add())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="where to write the serialized FileDescriptorSet")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(descriptor_set().SerializeToString())


if __name__ == "__main__":
    main()
