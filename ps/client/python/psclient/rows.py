"""rows.py: operations on rows of a sparse table, for routing.route. Row `id` of table
T of model M lives on the primary owner of ps_key_row(M, T, id). Items here are the
distinct ids (a pull of repeated ids asks once; a push sums the gradients of repeated
ids first, since a shard refuses an id twice in one request). Every request carries the
table's spec from config.json; a shard refuses a spec other than the one that first
created the table there (FAILED_PRECONDITION), after which the registry is read again.
"""
import grpc
import numpy as np

from . import keys as keymod
from ._wire import pb
from .errors import Error
from .messages import F32, optimizer_spec, table_spec
from .routing import Op, new_request_id

ID_OVERHEAD = 10  # bytes per id besides its values: the fixed64 id (packed)


class _RowsOp(Op):
    def __init__(self, model, table, spec, ids, refresh):
        """ids: distinct np.uint64 ids; spec: pb.TableSpec; refresh: () -> (a fresh
        train_config.Table, skip_non_finite), from the registry read again."""
        self.model, self.table, self.spec, self.ids = model, table, spec, ids
        self.refresh = refresh
        self.dim = spec.dim
        self.keys = keymod.keys_row(model, table, ids)
        self.item_bytes = np.full(len(ids), self.dim * 4 + ID_OVERHEAD, dtype=np.int64)

    def _refreshed(self):
        """The fresh (table, skip_non_finite); ValueError when the rows no longer fit."""
        t, skip = self.refresh()
        if t.dim != self.dim:
            raise ValueError(f"table {self.model}/{self.table} changed its dim from {self.dim} "
                             f"to {t.dim} in the registry")
        return t, skip


class RowsPull(_RowsOp):
    method = "PullRows"

    def __init__(self, model, table, spec, ids, refresh):
        super().__init__(model, table, spec, ids, refresh)
        self.what = f"pull rows of {model}/{table}"
        self.out = np.empty((len(ids), self.dim), dtype=F32)

    def request(self, idx, epoch):
        return pb.PullRowsRequest(epoch=epoch, model=self.model, table=self.table, spec=self.spec,
                                  ids=self.ids[idx].tolist())

    def done(self, idx, resp):
        vals = np.frombuffer(resp.values, dtype=F32)
        if len(vals) != len(idx) * self.dim:
            raise Error(f"{self.what}: a shard sent {len(resp.values)} value bytes for "
                        f"{len(idx)} rows of {self.dim} floats", grpc.StatusCode.INTERNAL)
        self.out[idx] = vals.reshape(len(idx), self.dim)

    def on_stale(self):
        self.spec = table_spec(self._refreshed()[0])
        return True


class RowsPush(_RowsOp):
    """An optimizer push of summed gradients (grads: [len(ids), dim] float32)."""
    method = "PushRows"
    write = True

    def __init__(self, model, table, spec, ids, grads, optimizer, skip_non_finite, refresh,
                 request_id=None):
        super().__init__(model, table, spec, ids, refresh)
        self.what = f"push rows of {model}/{table}"
        self.grads, self.optimizer, self.skip_non_finite = grads, optimizer, skip_non_finite
        self.skipped = 0
        # the same on every try: each row lands once; the caller's when it gave one
        self.request_id = request_id or new_request_id()
        self.resumed = request_id is not None

    def request(self, idx, epoch):
        return pb.PushRowsRequest(epoch=epoch, model=self.model, table=self.table, spec=self.spec,
                                  op=pb.PUSH_OPTIMIZE, optimizer=self.optimizer,
                                  ids=self.ids[idx].tolist(),
                                  skip_non_finite=self.skip_non_finite,
                                  values=self.grads[idx].tobytes(),
                                  request_id=self.request_id, first_try=self.first_try)

    def done(self, idx, resp):
        self.skipped += resp.skipped

    def on_stale(self):
        t, self.skip_non_finite = self._refreshed()
        if t.optimizer is None:
            raise ValueError(f"table {self.model}/{self.table} no longer has an optimizer in "
                             "the registry")
        self.spec, self.optimizer = table_spec(t), optimizer_spec(t.optimizer)
        return True  # a refused push applied nothing: sending it again is safe
