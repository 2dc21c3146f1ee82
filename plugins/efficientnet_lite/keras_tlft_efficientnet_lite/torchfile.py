"""Read a PyTorch ``state_dict`` file into numpy arrays, without PyTorch.

``torch.save`` writes one of two layouts. Since PyTorch 1.6 it is a zip archive holding
``data.pkl`` and one raw file per storage (``data/<key>``). Before that (and in the
EfficientNet-Lite0 wheel, saved in 2020) it is a stream: a magic number, a protocol version and a
system-info dict, each pickled, then the pickled object, then the pickled list of storage keys,
then for each key an 8-byte element count and the storage's raw bytes. In both, the pickle
rebuilds tensors by calling ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
...)`` on storages it names by a persistent id.

The unpickler here is restricted: it resolves only ``collections.OrderedDict``, the tensor
rebuild functions and the storage type names, and refuses every other global, so a crafted file
cannot run code. Tensors come back as numpy arrays in C order, copied out of the file's bytes.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsupportedCheckpointError(ValueError):
    """The file is not a PyTorch state_dict this reader understands."""


class _StorageType:
    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype


@dataclass(frozen=True)
class _TensorRef:
    """A tensor as the pickle describes it; its bytes are read once the pickle is done."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self, data: np.ndarray) -> np.ndarray:
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
        )
        return np.array(view)  # a copy in C order, independent of the file's buffer


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """``torch._utils._rebuild_tensor_v2``, recording where the tensor's bytes are."""
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    return data


_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"Refusing to load global {module}.{name}: a state_dict holds only tensors"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"Unexpected persistent id {pid!r}")
        if not isinstance(pid[1], _StorageType):
            raise pickle.UnpicklingError(f"Unexpected storage type {pid[1]!r}")
        return _StorageRef(str(pid[2]), pid[1].dtype)


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The tensors of the ``state_dict`` saved at ``path``, as numpy arrays by name.

    Raises:
        UnsupportedCheckpointError: the file is not a PyTorch state_dict of tensors.
        pickle.UnpicklingError: the pickle names anything but tensors and storages.
    """
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            return _read_zip(path)
    return _read_legacy(path)


def _read_zip(path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        pkl = next((n for n in archive.namelist() if n.split("/")[-1] == "data.pkl"), None)
        if pkl is None:
            raise UnsupportedCheckpointError(f"{path} is a zip file without data.pkl")
        prefix = pkl[: -len("data.pkl")]
        obj = _Unpickler(io.BytesIO(archive.read(pkl))).load()
        refs = _tensor_refs(obj, path)
        data = {
            ref.storage.key: np.frombuffer(
                archive.read(f"{prefix}data/{ref.storage.key}"), dtype=ref.storage.dtype
            )
            for ref in refs.values()
        }
    return {name: ref.materialize(data[ref.storage.key]) for name, ref in refs.items()}


def _read_legacy(path) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        try:
            magic = _Unpickler(f).load()
        except Exception as exc:
            raise UnsupportedCheckpointError(f"{path} is not a PyTorch file: {exc}") from exc
        if magic != _MAGIC:
            raise UnsupportedCheckpointError(f"{path} is not a PyTorch file (bad magic number)")
        _Unpickler(f).load()  # protocol version
        sys_info = _Unpickler(f).load()
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise UnsupportedCheckpointError(f"{path} was saved big-endian; not supported")
        refs = _tensor_refs(_Unpickler(f).load(), path)
        dtypes = {ref.storage.key: ref.storage.dtype for ref in refs.values()}
        data = {}
        for key in _Unpickler(f).load():
            (count,) = struct.unpack("<q", f.read(8))
            dtype = dtypes.get(str(key), np.dtype(np.uint8))
            data[str(key)] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype)
    return {name: ref.materialize(data[ref.storage.key]) for name, ref in refs.items()}


def _tensor_refs(obj, path) -> dict[str, _TensorRef]:
    if not isinstance(obj, dict) or not all(isinstance(v, _TensorRef) for v in obj.values()):
        raise UnsupportedCheckpointError(
            f"Expected a state_dict (a dict of tensors) in {path}. "
            f"Received: {type(obj).__name__}"
        )
    return dict(obj)
