"""A model's files on this machine, read without the network: its folder (a local path, or the Hugging Face
cache's ``models--ORG--NAME/snapshots/REV/``), its ``config.json`` and the real size of its weights from the
safetensors headers.

The safetensors format (https://github.com/huggingface/safetensors, README "Format"): 8 bytes, a
little-endian unsigned 64-bit header length N; N bytes of JSON mapping each tensor's name to ``dtype``,
``shape`` and ``data_offsets`` [begin, end) into the data that follows; an optional ``__metadata__``.
Sharded checkpoints carry ``model.safetensors.index.json`` whose ``metadata.total_size`` is the bytes of
all shards' tensors. Quantized checkpoints (GPTQ/AWQ int32-packed weights with fp16 scales, FP8) show
their real sizes there; nothing is guessed from the quantization's name.

The cache layout (``huggingface_hub`` docs, "Manage huggingface_hub cache-system"): ``$HF_HUB_CACHE``, else
``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``; ``refs/main`` names the snapshot of the main branch.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SourceError
from ..source import Source

MAX_HEADER = 100 * 2**20  # the safetensors reference implementation refuses headers above 100 MB

# Bytes per element of each safetensors dtype (safetensors README "Format"; F4 packs two per byte).
DTYPE_BYTES = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "F4": 0.5,
}


@dataclass(frozen=True)
class Weights:
    """What the checkpoint's files hold: ``bytes`` of tensor data, ``elements`` (packed quantized weights
    count as their storage elements), the dtypes by bytes, and where it was read."""

    bytes: int
    elements: int
    dtypes: dict[str, int]
    source: str

    def dtype_text(self) -> str:
        total = sum(self.dtypes.values()) or 1
        return ", ".join(f"{d} {b / total:.0%}" for d, b in sorted(self.dtypes.items(), key=lambda x: -x[1]))


CONFIG_LIMIT = 64 * 2**20  # a config.json, index or refs file larger than this is not one


def _rel(path: Path) -> str:
    """``path`` below ``Source("/")``: the user's own path, absolute (a symlink in it is followed)."""
    return str(Path(path).expanduser().absolute()).lstrip("/")


def read_local_bytes(path: Path, limit: int, *, whole: bool = False) -> bytes:
    """Bytes of a local model file through the one rooted reader (``Source("/").read_bytes``): a FIFO,
    device node, socket or directory is refused by ``lstat`` before any ``open`` (opening a FIFO blocks
    until a writer comes). ``FileNotFoundError`` when absent; ``ValueError`` with one line naming the
    file otherwise."""
    data: bytes = _local(path, lambda src, rel: src.read_bytes(rel, limit, whole=whole))
    return data


def read_local_json(path: Path) -> Any:
    """A local JSON file (``config.json``, the safetensors index) as ``Source("/").read_json`` reads it
    (``finite``: NaN/Infinity refused, RFC 8259 section 6). Errors as ``read_local_bytes``."""
    return _local(path, lambda src, rel: src.read_json(rel, CONFIG_LIMIT, finite=True))


def _local(path: Path, read: Callable[[Source, str], Any]) -> Any:
    try:
        return read(Source("/"), _rel(path))
    except KeyError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except SourceError as exc:
        raise ValueError(f"{path}: {exc.reason}") from None


def hub_cache(env: Mapping[str, str] | None = None) -> Path:
    """The Hugging Face hub cache folder this machine uses."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    home = Path(env["HF_HOME"]).expanduser() if env.get("HF_HOME") else Path.home() / ".cache" / "huggingface"
    return home / "hub"


def find_model_dir(model: str, env: Mapping[str, str] | None = None) -> Path | None:
    """The local folder holding ``model``'s ``config.json``: ``model`` itself when it is such a folder,
    else its snapshot in the Hugging Face cache (``refs/main``, else the newest snapshot); ``None`` when
    neither is on this machine."""
    p = Path(model).expanduser()
    if (p / "config.json").is_file():
        return p
    if model.count("/") != 1 or model.startswith(("/", ".", "~")):
        return None
    repo = hub_cache(env) / ("models--" + model.replace("/", "--"))
    snaps = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file():
        try:
            rev = read_local_bytes(ref, 4096).decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            rev = ""
        if rev and "/" not in rev and (snaps / rev / "config.json").is_file():
            return snaps / rev
    if not snaps.is_dir():
        return None
    found = [d for d in snaps.iterdir() if (d / "config.json").is_file()]
    return max(found, key=lambda d: d.stat().st_mtime) if found else None


def read_header(path: Path) -> dict[str, object]:
    """The JSON header of one ``.safetensors`` file, read through ``read_local_bytes`` (anything but a
    regular file refused before opening). ``ValueError`` when it is not one (corrupt) or cannot be read,
    ``FileNotFoundError`` when absent."""
    head = read_local_bytes(path, 8)
    if len(head) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte safetensors header length")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER:
        raise ValueError(f"{path}: header length {n} is above the {MAX_HEADER}-byte limit (corrupt?)")
    raw = read_local_bytes(path, 8 + n)[8:]
    if len(raw) < n:
        raise ValueError(f"{path}: header length {n} is impossible for a {8 + len(raw)}-byte file (corrupt?)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: safetensors header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a JSON object")
    return header


def _tensor_bytes(path: Path, name: str, t: object) -> tuple[str, int, int]:
    """``(dtype, bytes, elements)`` of one header entry, checked against its shape."""
    if not isinstance(t, dict) or not {"dtype", "shape", "data_offsets"} <= set(t):
        raise ValueError(f"{path}: tensor {name!r} lacks dtype/shape/data_offsets")
    dtype, shape, offsets = str(t["dtype"]), t["shape"], t["data_offsets"]
    ints = isinstance(shape, list) and isinstance(offsets, list) and len(offsets) == 2
    ints = ints and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in [*shape, *offsets])
    if not ints:
        raise ValueError(f"{path}: tensor {name!r} has shape {shape!r}, data_offsets {offsets!r} (corrupt)")
    elements = 1
    for d in shape:
        elements *= d
    begin, end = offsets
    nbytes = end - begin
    per = DTYPE_BYTES.get(dtype)
    if nbytes < 0 or (per is not None and abs(nbytes - elements * per) > 1):
        raise ValueError(f"{path}: tensor {name!r} {dtype}{shape} has {nbytes} bytes of data (corrupt)")
    return dtype, nbytes, elements


def file_weights(paths: list[Path]) -> tuple[int, int, dict[str, int]]:
    """Bytes, elements and bytes by dtype over the tensors of these safetensors files."""
    total = elements = 0
    dtypes: dict[str, int] = {}
    for path in paths:
        for name, t in read_header(path).items():
            if name == "__metadata__":
                continue
            dtype, nbytes, n = _tensor_bytes(path, name, t)
            total += nbytes
            elements += n
            dtypes[dtype] = dtypes.get(dtype, 0) + nbytes
    return total, elements, dtypes


def model_weights(folder: Path) -> Weights | None:
    """The checkpoint's weights from its safetensors headers; the index's ``metadata.total_size`` when
    shards are missing; ``None`` when the folder has neither (the fit then estimates from config.json).

    Every file is read through ``read_local_bytes``: a FIFO, device or unreadable file is refused
    without being opened. A weights file that is *there* but cannot be read is never passed over as if
    absent: with the index's ``total_size`` the weights come from that and ``Weights.source`` says which
    file could not be read; without it ``ValueError`` names the file (the gate is UNREADABLE: what is on
    disk decides the fit, and a config.json estimate is no evidence of it). ``ValueError`` on a corrupt
    file too."""
    index = folder / "model.safetensors.index.json"
    shards: list[Path] = []
    idx: object = {}
    try:
        idx = read_local_json(index)
    except FileNotFoundError:
        shards = sorted(folder.glob("*.safetensors"))
    else:
        wm = idx.get("weight_map") if isinstance(idx, dict) else None
        names = sorted(set(wm.values())) if isinstance(wm, dict) else []
        shards = [folder / str(n) for n in names]
    unread = ""
    if shards:
        try:
            total, elements, dtypes = file_weights(shards)
        except FileNotFoundError:
            pass  # shards not (all) downloaded: the index's total_size below, else the estimate
        except ValueError as exc:
            unread = str(exc)
        else:
            return Weights(total, elements, dtypes, f"{len(shards)} safetensors header(s) in {folder}")
    meta = idx.get("metadata") if isinstance(idx, dict) else None
    size = meta.get("total_size") if isinstance(meta, dict) else None
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        why = f" ({unread}: the headers were not read)" if unread else ""
        return Weights(size, 0, {}, f"metadata.total_size of {index}{why}")
    if unread:
        raise ValueError(
            f"weights not read: {unread}; the fit depends on the checkpoint's size and there is no "
            "index total_size to take it from"
        )
    return None
