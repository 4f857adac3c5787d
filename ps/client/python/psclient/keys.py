"""keys.py: the 64-bit keys of dense chunks and sparse rows, bit for bit as the C side
computes them (ps/common/util.c; tests/unit/test_agreement.c pins the values):

    ps_key_dense = XXH3-64 of  model "\\0", version as 8 LE bytes, tensor "\\0",
                               chunk index as 4 LE bytes
    ps_key_row   = XXH3-64 of  row id as 8 LE bytes, seeded with the table's key:
                   XXH3-64 of  model "\\0", table "\\0"

XXH3-64 with the default secret (seed 0 but for rows), over the concatenation (the C
code streams the pieces, which hashes the same bytes). The inputs of one tensor share
everything but the last bytes, so the common prefix is built once; a table's key too.
"""
import struct

import numpy as np
import xxhash

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


def _name(s, what):
    if not isinstance(s, str):
        raise ValueError(f"{what} must be a str, not {type(s).__name__}")
    b = s.encode()
    if b"\0" in b:
        raise ValueError(f"{what} {s!r} contains a NUL byte")
    return b + b"\0"


def key_dense(model, version, tensor, chunk):
    """The key of chunk `chunk` of `tensor` in version `version` of `model`."""
    if not 0 <= version <= _U64 or not 0 <= chunk <= _U32:
        raise ValueError(f"version {version} or chunk {chunk} out of range")
    data = _name(model, "model") + struct.pack("<Q", version) + _name(tensor, "tensor")
    return xxhash.xxh3_64_intdigest(data + struct.pack("<I", chunk))


def keys_dense(model, version, tensor, chunks):
    """np.uint64 array of the keys of chunks 0..chunks-1."""
    prefix = _name(model, "model") + struct.pack("<Q", version) + _name(tensor, "tensor")
    h = xxhash.xxh3_64_intdigest
    return np.fromiter((h(prefix + i.to_bytes(4, "little")) for i in range(chunks)),
                       dtype=np.uint64, count=chunks)


def key_table(model, table):
    """The key of a table: the seed of its rows' keys."""
    return xxhash.xxh3_64_intdigest(_name(model, "model") + _name(table, "table"))


def key_row(model, table, row_id):
    """The key of row `row_id` of sparse table `table` of `model`."""
    if not 0 <= row_id <= _U64:
        raise ValueError(f"row id {row_id} out of range 0..2^64-1")
    return xxhash.xxh3_64_intdigest(struct.pack("<Q", row_id), seed=key_table(model, table))


def keys_row(model, table, ids):
    """np.uint64 array of the keys of the rows `ids` (an np.uint64 array)."""
    seed = key_table(model, table)
    h = xxhash.xxh3_64_intdigest
    return np.fromiter((h(int(i).to_bytes(8, "little"), seed=seed) for i in ids.tolist()),
                       dtype=np.uint64, count=len(ids))
