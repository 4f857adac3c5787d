"""ring.py: the consistent-hash ring, rebuilt in Python from the bytes the coordinator
sends (Ring.ring = hashring_serialize, hashring/hashring.[ch]), placing keys exactly as
hashring_owners does in C.

Format (little-endian): "PSRG", u32 format version (1 or 2), u64 epoch, u32 vnodes
per weight, u32 member count, then per member in index order (ids in strcmp order):
u32 weight, u16 id length, id bytes, u16 address length, address bytes; in version 2
also u8 has_tokens (0 or 1) and, when 1, u32 n and n u64 tokens, strictly ascending:
the member's explicit points (`ring add --balanced`) instead of hashed ones.

Placement: member i owns weight_i * vnodes points; point v of a member sits at
XXH3-64(id bytes, one 0 byte, v as 4 LE bytes). Points are sorted by (hash, member
index). A key's owners are the distinct members met from the first point whose hash is
>= the key (wrapping to point 0 past the last one); the first is the primary. Here the
sorted hashes are one numpy array, so placing many keys is one searchsorted call.
"""
import struct

import numpy as np
import xxhash

WIRE_MAGIC = b"PSRG"
WIRE_VERSIONS = (1, 2)  # 1: hashed positions only; 2: a tokens flag per member
DEFAULT_VNODES = 1000  # HASHRING_DEFAULT_VNODES
MAX_POINTS = 1 << 22   # HASHRING_MAX_POINTS
MAX_ID = 63            # HASHRING_ID_MAX
MAX_ADDR = 255         # HASHRING_ADDR_MAX


class Member:
    """One shard on the ring: id, addr, weight, and index (its rank by id)."""

    def __init__(self, id, addr, weight, index):
        self.id, self.addr, self.weight, self.index = id, addr, weight, index

    def __repr__(self):
        return f"Member({self.id!r}, {self.addr!r}, weight={self.weight})"


def _vnode_hashes(member_id, count):
    prefix = member_id.encode() + b"\0"
    h = xxhash.xxh3_64_intdigest
    return np.fromiter((h(prefix + v.to_bytes(4, "little")) for v in range(count)),
                       dtype=np.uint64, count=count)


class Ring:
    """An immutable ring: epoch, members (by index) and the sorted points."""

    def __init__(self, members, vnodes_per_weight=DEFAULT_VNODES, epoch=0):
        """members: (id, addr, weight) or (id, addr, weight, tokens) tuples in any order
        (sorted by id here, as the C ring does); tokens (ascending uint64 positions, or
        None) replace the member's hashed positions."""
        if vnodes_per_weight <= 0:
            raise ValueError("vnodes_per_weight must be positive")
        ordered = sorted(members, key=lambda m: m[0].encode())
        tokens = [m[3] if len(m) > 3 else None for m in ordered]
        self.epoch = epoch
        self.vnodes_per_weight = vnodes_per_weight
        self.members = [Member(m[0], m[1], m[2], k) for k, m in enumerate(ordered)]
        ids = [m.id for m in self.members]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate member ids in {ids}")
        hashes = [np.asarray(t, dtype=np.uint64) if t is not None
                  else _vnode_hashes(m.id, m.weight * vnodes_per_weight)
                  for m, t in zip(self.members, tokens)]
        total = sum(len(h) for h in hashes)
        if total > MAX_POINTS:
            raise ValueError(f"{total} ring points, more than {MAX_POINTS}")
        owners = [np.full(len(h), m.index, dtype=np.uint32) for m, h in zip(self.members, hashes)]
        hashes = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
        owners = np.concatenate(owners) if owners else np.zeros(0, dtype=np.uint32)
        order = np.argsort(hashes, kind="stable")  # ties keep member order, as in C
        self._points = hashes[order]
        self._owners = owners[order]

    @classmethod
    def parse(cls, data):
        """A ring from hashring_serialize bytes; ValueError when they do not parse."""
        data = bytes(data)
        try:
            magic, version, epoch, vpw, count = struct.unpack_from("<4sIQII", data, 0)
        except struct.error:
            raise ValueError("ring bytes shorter than the ring header") from None
        if magic != WIRE_MAGIC or version not in WIRE_VERSIONS or vpw == 0:
            raise ValueError(f"not a ring of format {WIRE_VERSIONS} (magic {magic!r}, "
                             f"version {version}, vnodes {vpw})")
        off, members, prev = 24, [], None
        try:
            for _ in range(count):
                (weight,) = struct.unpack_from("<I", data, off)
                (n,) = struct.unpack_from("<H", data, off + 4)
                mid = data[off + 6:off + 6 + n]
                off += 6 + n
                (m,) = struct.unpack_from("<H", data, off)
                addr = data[off + 2:off + 2 + m]
                off += 2 + m
                if (weight == 0 or not 0 < len(mid) == n <= MAX_ID or not 0 < len(addr) == m
                        <= MAX_ADDR or b"\0" in mid or b"\0" in addr or (prev and prev >= mid)):
                    raise ValueError(f"bad ring member {mid!r}")
                prev = mid
                tokens = None
                if version == 2:
                    (flag,) = struct.unpack_from("<B", data, off)
                    off += 1
                    if flag > 1:
                        raise ValueError(f"bad tokens flag {flag} of ring member {mid!r}")
                    if flag:
                        (n,) = struct.unpack_from("<I", data, off)
                        if not 0 < n <= MAX_POINTS or len(data) - off - 4 < 8 * n:
                            raise ValueError(f"bad token count {n} of ring member {mid!r}")
                        tokens = np.frombuffer(data, dtype="<u8", count=n, offset=off + 4)
                        off += 4 + 8 * n
                        if n > 1 and not np.all(tokens[1:] > tokens[:-1]):
                            raise ValueError(f"tokens of ring member {mid!r} out of order")
                members.append((mid.decode(), addr.decode(), weight, tokens))
        except struct.error:
            raise ValueError("truncated ring bytes") from None
        if off != len(data):
            raise ValueError(f"{len(data) - off} trailing bytes after the ring")
        if version == 2 and all(m[3] is None for m in members):
            raise ValueError("a format 2 ring without tokens")
        return cls(members, vpw, epoch)

    def primaries(self, keys):
        """Member index of the primary owner of each key (np.uint64 array in, np.uint32
        array out). ValueError on an empty ring."""
        if len(self._points) == 0:
            raise ValueError("the ring has no members")
        i = np.searchsorted(self._points, np.asarray(keys, dtype=np.uint64), side="left")
        i[i == len(self._points)] = 0
        return self._owners[i]

    def owners(self, key, r):
        """The first min(r, members) distinct member indices clockwise from `key`,
        primary first (hashring_owners)."""
        n = len(self._points)
        if n == 0 or r <= 0:
            return []
        want = min(r, len(self.members))
        i = int(np.searchsorted(self._points, np.uint64(key), side="left")) % n
        out = []
        for step in range(n):
            o = int(self._owners[(i + step) % n])
            if o not in out:
                out.append(o)
                if len(out) == want:
                    break
        return out
