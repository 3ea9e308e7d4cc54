"""The inference worker's hot-path wire format: a frame request and its answer, packed by
hand. Pickling tuples with arrays on every frame costs the daemon measurable CPU; control
messages (load, attach, stop) and failures stay pickled, and pickle's protocol byte (0x80)
never collides with these tags."""

from __future__ import annotations

import struct

import numpy as np

INFER, OUT = b"I", b"O"
INFER_STRUCT = struct.Struct("<qi")  # ticket, slot
_OUT = struct.Struct("<qddcBI")  # ticket, preprocess ms, inference ms, dtype, extras, raw n


def encode_out(ticket: int, inf) -> bytes:
    raw = np.ascontiguousarray(inf.raw).reshape(-1)
    parts = [OUT, _OUT.pack(ticket, inf.preprocess_ms, inf.inference_ms,
                            raw.dtype.char.encode(), len(inf.extra), raw.size), raw.tobytes()]
    for extra in inf.extra:
        e = np.ascontiguousarray(extra, np.float32).reshape(-1)
        parts += [struct.pack("<I", e.size), e.tobytes()]
    return b"".join(parts)


def decode_out(data: bytes) -> tuple:
    """("out", ticket, preprocess_ms, inference_ms, raw, extras) from encode_out's bytes."""
    ticket, pre, inf, dtype, n_extra, n = _OUT.unpack_from(data, 1)
    at = 1 + _OUT.size
    raw = np.frombuffer(data, np.dtype(dtype.decode()), n, at)
    at += raw.nbytes
    extras = []
    for _ in range(n_extra):
        (size,) = struct.unpack_from("<I", data, at)
        extras.append(np.frombuffer(data, np.float32, size, at + 4))
        at += 4 + 4 * size
    return "out", ticket, pre, inf, raw, tuple(extras)
