"""A torch.save'd `state_dict` read with NumPy and a restricted unpickler, without importing torch.

Both of torch.save's formats are read: the zip archive of torch >= 1.6 (`<archive>/data.pkl` plus one raw record
per storage) and the legacy stream of pickles before it. Only what a state_dict of tensors holds is unpickled
(OrderedDict, `torch._utils._rebuild_tensor_v2` and typed storages); anything else is refused with a
`GanJaxError`, as are big-endian files and tensors whose view reaches outside their storage.

    from gan_jax import torch_files
    arrays = torch_files.read_state_dict("pt_inception-2015-12-05-6726825d.pth")   # {key: np.ndarray}
"""

from __future__ import annotations

import collections
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

from gan_jax.errors import GanJaxError

_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                   "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8, "BoolStorage": np.bool_}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of torch.save's pre-1.6 (legacy) format
_LEGACY_PROTOCOL = 1001


class _Storage:
    """A torch storage named in the pickle: its key, element type and length; its bytes are read afterwards."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, np.dtype(dtype), int(numel)


class _TensorRef(collections.namedtuple("_TensorRef", "storage offset shape stride")):
    """A tensor as torch pickles it (torch._utils._rebuild_tensor_v2's first four arguments)."""


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles only what a state_dict of tensors holds: OrderedDict, _rebuild_tensor_v2 and typed storages."""

    def __init__(self, file, path: str):
        super().__init__(file)
        self.path = path
        self.storages: dict[str, _Storage] = {}  # key -> storage, in the order the pickle names them

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, shape, stride, *_: _TensorRef(storage, offset, tuple(shape), tuple(stride))
        if module == "torch" and name in _STORAGE_DTYPES:
            return np.dtype(_STORAGE_DTYPES[name])
        raise GanJaxError(f"refusing to load {self.path!r}: it needs {module}.{name}, which a state_dict of tensors "
                          "does not hold; save one with torch.save(model.state_dict(), path)")

    def persistent_load(self, pid: Any) -> _Storage:
        # zip: ('storage', dtype, key, location, numel); legacy: the same plus view metadata (None for a whole storage)
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], np.dtype) and (len(pid) == 5 or pid[5] is None)):
            raise GanJaxError(f"refusing to load {self.path!r}: unsupported torch storage reference {pid!r}")
        key = str(pid[2])
        return self.storages.setdefault(key, _Storage(key, pid[1], pid[4]))


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A torch.save'd state_dict (zip or legacy format) as {key: NumPy array}, without importing torch."""
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    try:
        state, storage_bytes = (_read_zip if zipped else _read_legacy)(path)
        if not isinstance(state, dict) or not all(isinstance(v, _TensorRef) for v in state.values()):
            raise GanJaxError(f"{path!r} holds no state_dict of tensors")
        return {str(k): _to_array(v, storage_bytes[v.storage.key], path) for k, v in state.items()}
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, struct.error, zipfile.BadZipFile) as e:
        if isinstance(e, GanJaxError):
            raise
        raise GanJaxError(f"{path!r} is not a readable torch.save file ({type(e).__name__}: {e})") from None


def _read_zip(path: str) -> tuple[Any, dict[str, bytes]]:
    """torch >= 1.6: a zip of <archive>/data.pkl and one raw <archive>/data/<key> record per storage."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise GanJaxError(f"{path!r} is a zip file but not a torch.save archive (no single */data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        if prefix + "byteorder" in archive.namelist() and archive.read(prefix + "byteorder") != b"little":
            raise GanJaxError(f"{path!r} was saved big-endian; only little-endian files are supported")
        unpickler = _StateDictUnpickler(archive.open(pickles[0]), path)
        state = unpickler.load()
        return state, {key: archive.read(f"{prefix}data/{key}") for key in unpickler.storages}


def _read_legacy(path: str) -> tuple[Any, dict[str, bytes]]:
    """torch < 1.6: pickles of the magic number, protocol, system info, the object and its storage keys, then each
    storage as an int64 element count followed by its raw bytes, in the keys' order."""
    with open(path, "rb") as f:
        header = [_StateDictUnpickler(f, path).load() for _ in range(3)]
        if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL:
            raise GanJaxError(f"{path!r} is neither a zip nor a legacy torch.save file")
        if not isinstance(header[2], dict) or not header[2].get("little_endian", False):
            raise GanJaxError(f"{path!r} was saved big-endian; only little-endian files are supported")
        unpickler = _StateDictUnpickler(f, path)
        state = unpickler.load()
        data = {}
        for key in _StateDictUnpickler(f, path).load():
            (numel,) = struct.unpack("<q", f.read(8))
            data[key] = f.read(numel * unpickler.storages[key].dtype.itemsize)
        return state, data


def _to_array(ref: _TensorRef, data: bytes, path: str) -> np.ndarray:
    """The tensor `ref` views in its storage's bytes, copied; GanJaxError if the view reaches outside them."""
    storage = ref.storage
    flat = np.frombuffer(data, storage.dtype, count=min(storage.numel, len(data) // storage.dtype.itemsize))
    last = ref.offset + sum((d - 1) * s for d, s in zip(ref.shape, ref.stride))
    if 0 in ref.shape:
        return np.zeros(ref.shape, storage.dtype)
    if ref.offset < 0 or min(ref.stride, default=0) < 0 or last >= len(flat):
        raise GanJaxError(f"{path!r} is damaged: a tensor of shape {ref.shape} reaches outside its storage "
                          f"{storage.key} of {len(flat)} elements")
    strides = [s * storage.dtype.itemsize for s in ref.stride]
    return np.lib.stride_tricks.as_strided(flat[ref.offset:], ref.shape, strides).copy()
