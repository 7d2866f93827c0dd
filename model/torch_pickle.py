"""Reads a PyTorch checkpoint (legacy or zip format) into numpy arrays without importing torch."""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}


@dataclass(frozen=True)
class StorageType:
    """Stand-in for a torch.*Storage class: only its element dtype matters."""

    name: str
    dtype: type


@dataclass
class StorageRef:
    """A storage named by a persistent id; its bytes are attached once read."""

    key: str
    dtype: type
    numel: int
    offset: int = 0  # element offset into the root storage (legacy views)
    data: np.ndarray | None = None


@dataclass
class LazyTensor:
    """A tensor whose storage bytes may not have been read yet (legacy format)."""

    storage: StorageRef
    offset: int
    size: tuple
    stride: tuple

    def materialize(self) -> np.ndarray:
        flat = self.storage.data
        if flat is None:
            raise pickle.UnpicklingError(f"storage {self.storage.key} was never read")
        start = self.storage.offset + self.offset
        last = start + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True) if n > 0)
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=flat.dtype)
        if start < 0 or last >= flat.size or any(s < 0 for s in self.stride):
            raise pickle.UnpicklingError(f"tensor view out of bounds of storage {self.storage.key}")
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[start:], shape=self.size, strides=[s * item for s in self.stride], writeable=False
        )
        return np.array(view, copy=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, StorageRef):
        raise pickle.UnpicklingError("_rebuild_tensor_v2 called without a storage")
    return LazyTensor(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    return data


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and torch storage persistent ids."""

    def __init__(self, file, storages: dict[str, StorageRef] | None = None):
        super().__init__(file)
        self.storages = {} if storages is None else storages
        self.views: list[StorageRef] = []

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allow-listed") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, StorageType):
            raise pickle.UnpicklingError(f"persistent id names no storage type: {pid!r}")
        root = self.storages.setdefault(key, StorageRef(str(key), storage_type.dtype, int(numel)))
        view = pid[5] if len(pid) > 5 else None
        if view is None:
            return root
        # Old legacy files may pickle views into a root storage: (view_key, offset, size).
        _view_key, offset, size = view
        ref = StorageRef(root.key, root.dtype, int(size), int(offset))
        self.views.append(ref)
        return ref


def _load_legacy(f: io.BytesIO) -> object:
    storages: dict[str, StorageRef] = {}
    if RestrictedUnpickler(f).load() != LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a PyTorch checkpoint: bad magic number")
    if RestrictedUnpickler(f).load() != LEGACY_PROTOCOL:
        raise pickle.UnpicklingError("unsupported legacy protocol version")
    sys_info = RestrictedUnpickler(f).load()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise pickle.UnpicklingError("big-endian checkpoints are not supported")
    unpickler = RestrictedUnpickler(f, storages)
    result = unpickler.load()
    for key in RestrictedUnpickler(f).load():
        ref = storages.get(key)
        if ref is None:
            raise pickle.UnpicklingError(f"storage {key} is not referenced by the checkpoint")
        (count,) = struct.unpack("<q", f.read(8))
        nbytes = count * np.dtype(ref.dtype).itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise pickle.UnpicklingError(f"truncated storage {key}")
        ref.data = np.frombuffer(raw, dtype=ref.dtype)
    for view in unpickler.views:
        view.data = storages[view.key].data
    return result


def _load_zip(data: bytes) -> object:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pkl_name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
        if pkl_name is None:
            raise pickle.UnpicklingError("zip checkpoint without data.pkl")
        prefix = pkl_name[: -len("data.pkl")]
        byteorder = prefix + "byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise pickle.UnpicklingError("big-endian checkpoints are not supported")
        storages: dict[str, StorageRef] = {}
        result = RestrictedUnpickler(io.BytesIO(archive.read(pkl_name)), storages).load()
        for key, ref in storages.items():
            ref.data = np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype=ref.dtype)
    return result


def _materialize(obj):
    if isinstance(obj, LazyTensor):
        return obj.materialize()
    if isinstance(obj, dict):
        return {key: _materialize(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(value) for value in obj)
    return obj


def load_bytes(data: bytes) -> object:
    """Unpickles checkpoint bytes, replacing every tensor with a numpy array."""
    if data[:4] == b"PK\x03\x04":
        return _materialize(_load_zip(data))
    return _materialize(_load_legacy(io.BytesIO(data)))


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a checkpoint holding a state dict (optionally under 'state_dict') into numpy arrays."""
    obj = load_bytes(Path(path).read_bytes())
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds {type(obj).__name__}, not a state dict")
    return {key: value for key, value in obj.items() if isinstance(value, np.ndarray)}
