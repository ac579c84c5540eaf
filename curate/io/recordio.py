"""MXNet RecordIO (.rec + .idx), the insightface training format, without mxnet.

Record layout: uint32 magic 0xCED7230A, uint32 lrecord (upper 3 bits: continuation flag,
lower 29: payload length), payload, zero padding to 4 bytes. An image payload starts with an
IRHeader struct '<IfQQ' (flag, label, id, id2); when flag > 0, `flag` float32 labels follow and
`label` is unused. insightface writes record 0 as a header whose labels are
(first identity-record key, end key): image records are keys 1..label[0]-1.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

MAGIC = 0xCED7230A
_HEAD = struct.Struct("<II")
_IR = struct.Struct("<IfQQ")
_MAX_LEN = (1 << 29) - 1


class RecordIOError(ValueError):
    pass


@dataclass(frozen=True)
class IRHeader:
    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int


def pack(header: IRHeader, payload: bytes) -> bytes:
    if isinstance(header.label, (tuple, list)):
        labels = struct.pack(f"<{len(header.label)}f", *header.label)
        return _IR.pack(len(header.label), 0.0, header.id, header.id2) + labels + payload
    return _IR.pack(0, float(header.label), header.id, header.id2) + payload


def unpack(record: bytes) -> tuple[IRHeader, bytes]:
    if len(record) < _IR.size:
        raise RecordIOError(f"record of {len(record)} bytes is shorter than its header")
    flag, label, id_, id2 = _IR.unpack_from(record)
    body = record[_IR.size :]
    if flag > 0:
        if len(body) < 4 * flag:
            raise RecordIOError(f"record declares {flag} labels but holds {len(body)} bytes")
        labels = struct.unpack_from(f"<{flag}f", body)
        return IRHeader(flag, labels, id_, id2), body[4 * flag :]
    return IRHeader(flag, label, id_, id2), body


def read_idx(path: str) -> list[tuple[int, int]]:
    """(key, byte offset) pairs of a .idx file, in file order."""
    out = []
    with open(path, encoding="ascii") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise RecordIOError(f"{path}:{lineno}: expected 'key<TAB>offset', got {line!r}")
            try:
                out.append((int(parts[0]), int(parts[1])))
            except ValueError:
                raise RecordIOError(f"{path}:{lineno}: non-integer key/offset {line!r}") from None
    return out


def read_at(f, offset: int, max_len: int = _MAX_LEN) -> bytes:
    """Read the (possibly multi-part) record starting at ``offset`` of an open binary file."""
    parts = []
    total = 0
    f.seek(offset)
    while True:
        head = f.read(_HEAD.size)
        if len(head) < _HEAD.size:
            raise RecordIOError(f"offset {offset}: end of file inside a record header")
        magic, lrec = _HEAD.unpack(head)
        if magic != MAGIC:
            raise RecordIOError(f"offset {offset}: bad magic 0x{magic:08x}")
        cflag, length = lrec >> 29, lrec & _MAX_LEN
        total += length
        if total > max_len:
            raise RecordIOError(f"offset {offset}: record longer than {max_len} bytes")
        data = f.read(length)
        if len(data) < length:
            raise RecordIOError(f"offset {offset}: record truncated ({len(data)} of {length} bytes)")
        f.seek((4 - length % 4) % 4, os.SEEK_CUR)
        parts.append(data)
        if cflag in (0, 3):  # whole record, or last part
            return b"".join(parts)
        if cflag not in (1, 2):
            raise RecordIOError(f"offset {offset}: bad continuation flag {cflag}")


def image_keys(rec_path: str, idx: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (key, offset) pairs that hold images, skipping insightface's header/identity records."""
    if not idx:
        return []
    offsets = dict(idx)
    if 0 in offsets:
        with open(rec_path, "rb") as f:
            header, _ = unpack(read_at(f, offsets[0]))
        if header.flag > 0:
            end = int(header.label[0])
            return [(k, o) for k, o in idx if 0 < k < end]
    return idx


class RecordIOWriter:
    """Write an indexed .rec/.idx pair (used by tests and by exports)."""

    def __init__(self, rec_path: str, idx_path: str):
        self._rec = open(rec_path, "wb")
        self._idx = open(idx_path, "w", encoding="ascii")

    def write(self, key: int, record: bytes) -> None:
        if len(record) > _MAX_LEN:
            raise RecordIOError(f"record {key} too large ({len(record)} bytes)")
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(_HEAD.pack(MAGIC, len(record)))
        self._rec.write(record)
        self._rec.write(b"\0" * ((4 - len(record) % 4) % 4))

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
