"""dense.py: operations on a dense tensor of a model version, for routing.route: the
tensor is cut into chunks of chunk_floats floats (the last one shorter), chunk i under
key ps_key_dense(model, version, tensor, i). A pull copies each chunk's floats from the
answer's value bytes (a numpy view, no per-float work in Python) into its place in the
result; a push sends each chunk's slice of the caller's array.
"""
import grpc
import numpy as np

from . import keys as keymod
from ._wire import pb
from .errors import Error
from .messages import F32, optimizer_spec
from .routing import Op, new_request_id

KEY_OVERHEAD = 16  # bytes per key besides its values: the key, its length, their tags


class _TensorOp(Op):
    def __init__(self, entry, tensor):
        self.entry, self.t = entry, tensor
        self.model, self.version = entry.model, entry.version
        n = tensor.chunks
        self.keys = keymod.keys_dense(self.model, self.version, tensor.name, n)
        self.starts = np.arange(n, dtype=np.int64) * tensor.chunk_floats
        self.lengths = np.minimum(tensor.chunk_floats, tensor.count - self.starts)


class DensePull(_TensorOp):
    method = "Pull"

    def __init__(self, entry, tensor, refresh):
        super().__init__(entry, tensor)
        self.refresh = refresh  # () -> the registry entry read again (Registry.refresher)
        self.what = f"pull {self.model}/{tensor.name} version {self.version}"
        self.item_bytes = self.lengths * 4 + KEY_OVERHEAD
        self.out = np.empty(tensor.count, dtype=F32)

    def request(self, idx, epoch):
        return pb.PullRequest(epoch=epoch, keys=self.keys[idx].tolist())

    def done(self, idx, resp):
        want = self.lengths[idx]
        if len(resp.lengths) != len(idx) or not np.array_equal(resp.lengths, want):
            raise Error(f"{self.what}: a shard answered lengths {list(resp.lengths)[:8]} for "
                        f"chunks of {want[:8].tolist()} floats",
                        grpc.StatusCode.FAILED_PRECONDITION)
        vals = np.frombuffer(resp.values, dtype=F32)
        if len(vals) != int(want.sum()):
            raise Error(f"{self.what}: a shard sent {len(resp.values)} value bytes for "
                        f"{int(want.sum())} floats", grpc.StatusCode.INTERNAL)
        off = 0
        for s, n in zip(self.starts[idx].tolist(), want.tolist()):
            self.out[s:s + n] = vals[off:off + n]
            off += n

    def on_stale(self):
        self.refresh()  # the cache is fresh for the next call; raises if the version is gone
        return True  # a pull is safe to repeat


class DensePush(_TensorOp):
    """ASSIGN, ADD or OPTIMIZE (with `optimizer`, a pb.OptimizerSpec) of flat values."""
    method = "Push"
    write = True

    def __init__(self, entry, tensor, op, values, refresh, optimizer=None,
                 skip_non_finite=False, request_id=None):
        super().__init__(entry, tensor)
        self.op, self.values = op, values
        self.optimizer, self.skip_non_finite = optimizer, skip_non_finite
        self.refresh = refresh  # () -> the registry entry read again (Registry.refresher)
        name = pb.PushOp.Name(op).replace("PUSH_", "").lower()
        self.what = f"push ({name}) {self.model}/{tensor.name} version {self.version}"
        self.names = [f"{self.model}/{tensor.name}#{i}" for i in range(tensor.chunks)]
        self.item_bytes = (self.lengths * 4 + KEY_OVERHEAD +
                           np.array([len(n) + 3 for n in self.names], dtype=np.int64))
        self.skipped = 0
        # the same on every try: each key lands once; the caller's when it gave one
        self.request_id = request_id or new_request_id()
        self.resumed = request_id is not None

    def request(self, idx, epoch):
        v = self.values
        data = b"".join(memoryview(v[s:s + n]) for s, n in
                        zip(self.starts[idx].tolist(), self.lengths[idx].tolist()))
        req = pb.PushRequest(epoch=epoch, keys=self.keys[idx].tolist(),
                             lengths=self.lengths[idx].tolist(), op=self.op,
                             names=[self.names[i] for i in idx.tolist()], values=data,
                             request_id=self.request_id, first_try=self.first_try)
        if self.op == pb.PUSH_OPTIMIZE:
            req.optimizer.CopyFrom(self.optimizer)
            req.skip_non_finite = self.skip_non_finite
        return req

    def done(self, idx, resp):
        self.skipped += resp.skipped

    def on_stale(self):
        entry = self.refresh()  # hyper-parameters may have changed in the registry
        if self.op == pb.PUSH_OPTIMIZE:
            opt, self.skip_non_finite = entry.training_for(self.t.name)
            self.optimizer = optimizer_spec(opt)
        return True  # a refused push applied nothing: sending it again is safe
