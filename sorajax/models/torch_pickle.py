"""Reading PyTorch `.pth` state dicts without PyTorch: shapes first, tensors one at a time.

Why: Wan's original release ships its VAE and text encoder as `torch.save` files, and sorajax never
depends on torch. A `.pth` is a zip archive: `<name>/data.pkl` (a pickle of the state dict whose
tensors refer to storages by key) and `<name>/data/<key>` (each storage's raw little-endian bytes,
stored uncompressed). This module unpickles `data.pkl` with an allow-list of exactly what a state dict
holds (an OrderedDict, `torch._utils._rebuild_tensor_v2` and the typed storage classes), and builds
none of torch's objects: each tensor becomes a :class:`TensorRef` (storage, dtype, offset, shape,
strides), so the shapes are known before any tensor byte is read. Data is memory-mapped from the
archive only when a tensor is asked for. Anything else a pickle may ask for (an arbitrary class or
function) is refused, never called: loading a pickle with torch would run it.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sorajax.models.pretrained import CheckpointError

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # a zip member's local header (30 bytes)


def _storage_dtypes() -> dict[str, np.dtype]:
    import ml_dtypes  # numpy's bfloat16

    return {"FloatStorage": np.dtype(np.float32), "HalfStorage": np.dtype(np.float16),
            "BFloat16Storage": np.dtype(ml_dtypes.bfloat16), "DoubleStorage": np.dtype(np.float64),
            "LongStorage": np.dtype(np.int64), "IntStorage": np.dtype(np.int32), "ShortStorage": np.dtype(np.int16),
            "CharStorage": np.dtype(np.int8), "ByteStorage": np.dtype(np.uint8), "BoolStorage": np.dtype(np.bool_)}


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stands in for `torch.<X>Storage` in the pickle: only its element dtype matters."""

    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclasses.dataclass(frozen=True)
class TensorRef:
    """A tensor as the pickle describes it: which storage, where in it, its shape and strides (elements)."""

    storage: str
    dtype: np.dtype
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    @property
    def extent(self) -> int:
        """Elements of the storage the tensor reaches (1 + its last element's index); 0 when empty."""
        if any(n == 0 for n in self.shape):
            return 0
        return self.offset + 1 + sum((n - 1) * s for n, s in zip(self.shape, self.strides))


def _rebuild_tensor(storage: Any, offset: Any, shape: Any, strides: Any, *_: Any) -> TensorRef:
    """Stands in for `torch._utils._rebuild_tensor_v2`; requires_grad, hooks and metadata are dropped."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("a tensor without a storage")
    shape, strides = tuple(int(n) for n in shape), tuple(int(s) for s in strides)
    if len(shape) != len(strides) or min((*shape, *strides, int(offset)), default=0) < 0:
        raise pickle.UnpicklingError(f"a tensor of shape {shape} with strides {strides}")
    return TensorRef(storage.key, storage.dtype, int(offset), shape, strides)


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a state dict's `data.pkl` and nothing else: every other global is refused."""

    def __init__(self, data: bytes, path: Path):
        super().__init__(io.BytesIO(data))
        self.path = path
        self.storage_dtypes = _storage_dtypes()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in self.storage_dtypes:
            return _StorageType(self.storage_dtypes[name])
        raise CheckpointError(f"{self.path}: the pickle asks for {module}.{name}, which a plain state dict never "
                              "holds; refused unread (unpickling it could run code): use the release's own file")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        return _StorageRef(str(pid[2]), pid[1].dtype, int(pid[4]))


def _data_offset(file: Any, info: zipfile.ZipInfo) -> int:
    """Where a stored (uncompressed) member's bytes start in the archive file."""
    file.seek(info.header_offset)
    header = _LOCAL_HEADER.unpack(file.read(_LOCAL_HEADER.size))
    if header[0] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"no local header for {info.filename}")
    return info.header_offset + _LOCAL_HEADER.size + header[-2] + header[-1]


class TorchCheckpoint:
    """A `torch.save` zip file of a flat state dict: its tensors' shapes and dtypes, then their data.

    Opening reads and checks only the pickle and the archive's directory (every storage present and
    large enough for its tensors), so shape checks of a multi-GB file cost milliseconds; every
    problem is a one-line :class:`CheckpointError` naming the file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.refs, self._members = self._read()

    def _read(self) -> tuple[dict[str, TensorRef], dict[str, zipfile.ZipInfo]]:
        path = self.path
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file: download the checkpoint's .pth file")
        with path.open("rb") as f:
            magic = f.read(4)
        if magic != b"PK\x03\x04":
            if magic[:1] == b"\x80":
                raise CheckpointError(f"{path}: a legacy (non-zip, pre-1.6) PyTorch file, which sorajax does not "
                                      "read: re-save it with torch.save(torch.load(f), f) in PyTorch >= 1.6")
            raise CheckpointError(f"{path}: not a PyTorch zip checkpoint (it starts {magic!r}): download it again")
        try:
            with zipfile.ZipFile(path) as archive:
                members = {info.filename: info for info in archive.infolist()}
                pickles = [name for name in members if name.endswith("/data.pkl")]
                if len(pickles) != 1:
                    raise CheckpointError(f"{path}: a zip without one <name>/data.pkl (not a torch.save file): "
                                          "download the checkpoint again")
                prefix = pickles[0][: -len("data.pkl")]
                byteorder = members.get(prefix + "byteorder")
                if byteorder is not None and archive.read(byteorder) != b"little":
                    raise CheckpointError(f"{path}: saved big-endian, which sorajax does not read: "
                                          "re-save it on a little-endian machine")
                state = _StateDictUnpickler(archive.read(pickles[0]), path).load()
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError,
                AttributeError, IndexError, OSError) as error:
            raise CheckpointError(f"{path}: not a complete PyTorch checkpoint ({type(error).__name__}: {error}): "
                                  "the file is truncated or garbled; download it again") from None
        if not isinstance(state, dict) or not all(isinstance(v, TensorRef) for v in state.values()):
            raise CheckpointError(f"{path}: holds no flat state dict of tensors (e.g. a whole training checkpoint): "
                                  "save model.state_dict() alone")
        storages = {}
        for key, ref in state.items():
            info = members.get(f"{prefix}data/{ref.storage}")
            if info is None or info.file_size < ref.extent * ref.dtype.itemsize:
                raise CheckpointError(f"{path}: tensor {key!r} lies beyond its stored data (storage {ref.storage!r}): "
                                      "the file is truncated or garbled; download it again")
            storages[ref.storage] = info
        return dict(state), storages

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: ref.shape for key, ref in self.refs.items()}

    def dtypes(self) -> dict[str, np.dtype]:
        return {key: ref.dtype for key, ref in self.refs.items()}

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every `(key, array)`: read-only views of a memory map of just that tensor's bytes (a copy for a
        compressed member), so host memory holds about the tensor in use, not the file."""
        with self.path.open("rb") as file:
            for key, ref in self.refs.items():
                yield key, self._tensor(file, ref)

    def _tensor(self, file: Any, ref: TensorRef) -> np.ndarray:
        itemsize, count = ref.dtype.itemsize, ref.extent - ref.offset
        if ref.extent == 0:
            return np.zeros(ref.shape, ref.dtype)
        info = self._members[ref.storage]
        if info.compress_type == zipfile.ZIP_STORED:
            start = _data_offset(file, info) + ref.offset * itemsize
            flat = np.memmap(file, ref.dtype, mode="r", offset=start, shape=(count,))
        else:  # torch never compresses; a re-zipped file still reads
            with zipfile.ZipFile(self.path) as archive:
                flat = np.frombuffer(archive.read(info), ref.dtype, count, ref.offset * itemsize)
        return np.lib.stride_tricks.as_strided(flat, ref.shape, tuple(s * itemsize for s in ref.strides),
                                               writeable=False)
