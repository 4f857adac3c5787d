"""client.py: psclient.Client, what a training script uses against a running cluster:
pull and push whole dense tensors of a model version, and pull and push rows of the
model's sparse tables, with the optimizers config.json names applied on the shards.

    c = psclient.Client()                      # arg, $PS_COORDINATOR, or run/cluster.env
    w = c.pull("digits_mlp", "fc1.weight")     # float32, shaped as the registry says
    c.push("digits_mlp", "fc1.weight", grad)   # the tensor's optimizer, on the shards
    rows = c.pull_rows("rec", "user_emb", ids) # [len(ids), dim]
    c.push_rows("rec", "user_emb", ids, grads) # repeated ids are summed first
    c.clock("rec")                             # this worker finished a step (BSP/SSP)

Arguments are checked here before anything is sent (ValueError: unknown tensor or
table, shape mismatch, non-finite gradients the model rejects); anything the servers
refuse raises psclient.Error with the gRPC code and the server's message.

Every write carries a request id, the same on every retry the client makes itself, so a
shard applies each chunk or row of it once. A write that raised (its shard unreachable
past the failover wait, say) may still have landed in part; to try it again without
applying anything twice, give the write a request id of your own and pass the same one
again (psclient.new_request_id() makes one):

    rid = psclient.new_request_id()
    for attempt in range(5):
        try:
            c.add("m", "t", delta, request_id=rid)   # lands once, whatever the tries
            break
        except psclient.Error:
            time.sleep(1)

The same id must name the same write (same tensor or table, same values): shards
remember per key which ids applied to it, so an id used again for another write is
silently not applied to the keys it already changed (and is applied to the others).
They remember an id for their last few million keys pushed (ps-shard --dedup-mb;
Health's dedup_window_ms says how far back), so retry within seconds, not hours. Routing,
message sizes and ring changes are routing.py's. Not thread-safe: one Client per thread
(like the C client).
"""
import numpy as np

from . import discovery
from ._wire import pb
from .dense import DensePull, DensePush
from .messages import check_finite, floats, optimizer_spec, table_spec
from .registry import Registry
from .routing import CALL_TIMEOUT_S, MAX_REQUEST_BYTES, Router, check_request_id
from .rows import RowsPull, RowsPush
from .workers import Worker

WAIT_TIMEOUT_S = 600.0  # the longest a pull waits for the slowest worker (bsp/ssp)


class Client:
    def __init__(self, coordinator=None, *, max_request_bytes=MAX_REQUEST_BYTES, name="",
                 wait_timeout_s=WAIT_TIMEOUT_S, call_timeout_s=CALL_TIMEOUT_S,
                 failover_wait_s=None):
        """Connects to the coordinator (see discovery.py) and fetches the ring.
        max_request_bytes bounds one message to a shard (the shard takes 64 MiB); name
        labels this client as a training worker in the coordinator's log; a pull waits at
        most wait_timeout_s for the slowest worker (bsp/ssp models); one call to a shard
        is given up after call_timeout_s (a shard that stopped answering: its keys are
        then tried on the next ring); keys whose shard cannot be reached are tried again,
        on a fresh ring each time, for failover_wait_s (None: routing.FAILOVER_WAIT_S, 20 s)
        when the ring keeps 2 copies or more (long enough for the coordinator to fail a
        dead shard over; 0: fail at once, and try again yourself with the write's
        request_id)."""
        if max_request_bytes <= 0:
            raise ValueError("max_request_bytes must be positive")
        if call_timeout_s <= 0:
            raise ValueError("call_timeout_s must be positive")
        if failover_wait_s is not None and not failover_wait_s >= 0:
            raise ValueError("failover_wait_s must be 0 or more")
        self._name, self._wait_timeout_s = name, wait_timeout_s
        self._workers = {}
        self.coordinator = discovery.coordinator_address(coordinator)
        self._router = Router(self.coordinator, max_request_bytes, call_timeout_s,
                              failover_wait_s)
        try:
            self._router.refresh_ring()
        except Exception:
            self._router.close()
            raise
        self._registry = Registry(self._router.coord, self.coordinator)

    # ------------------------------------------------------------ lifetime ---

    def close(self):
        for w in self._workers.values():
            w.leave()
        self._workers.clear()
        self._router.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def epoch(self):
        """The epoch of the ring this client routes with."""
        return self._router.ring.epoch

    # ------------------------------------------------------------ registry ---

    def models(self):
        """(name, version) of every version of every model in the registry."""
        return self._registry.list()

    # ------------------------------------------------------------ clocks ---

    def clock(self, model):
        """This worker finished a step of training `model` (its pushes are applied):
        its logical clock advances by one. Registers as a worker on first use. Returns
        the new clock. Under bsp/ssp (config.json training.consistency), pulls then wait
        until the slowest live worker is within the staleness bound."""
        return self._worker(model).tick()

    def _worker(self, model):
        w = self._workers.get(model)
        if w is None:
            w = self._workers[model] = Worker(self._router.coord, self.coordinator, model,
                                              self._name)
        return w

    def _wait_turn(self, model):
        """Before a pull: a bsp/ssp worker waits for the others, and a worker of a model
        with consistent propagation lets a publish park it here, between its steps (see
        workers.py). A streaming asp model's pulls never register or wait."""
        w = self._workers.get(model)
        if w is None:
            train = self._registry.get(model).train()
            if train.consistency == "asp" and train.propagation == "streaming":
                return
        (w or self._worker(model)).wait(self._wait_timeout_s)

    # ------------------------------------------------------------ dense ---

    def pull(self, model, tensor, version=None):
        """The tensor's values (float32, shaped as the registry says) of `version`
        (None: the latest)."""
        entry = self._registry.get(model, version)
        t = entry.tensor(tensor)
        self._wait_turn(model)
        op = DensePull(entry, t, self._registry.refresher(model, version, entry))
        self._router.route(op)
        return op.out.reshape(t.shape)

    def assign(self, model, tensor, values, version=None, request_id=None):
        """Replaces the tensor's values (request_id: see the module's text)."""
        self._push_values(model, tensor, values, version, pb.PUSH_ASSIGN, request_id)

    def add(self, model, tensor, delta, version=None, request_id=None):
        """Adds delta to the tensor's values, element-wise (request_id: see the
        module's text)."""
        self._push_values(model, tensor, delta, version, pb.PUSH_ADD, request_id)

    def push(self, model, tensor, grad, version=None, request_id=None):
        """Applies a gradient with the tensor's optimizer from config.json (training:
        its `tensors` entry, else `optimizer`); ValueError when it has none. Returns the
        number of chunks the shards skipped for non-finite gradients (only with
        training.non_finite "skip"; with "reject", the default, a NaN or infinity is
        refused here). request_id: see the module's text."""
        rid = check_request_id(request_id)
        entry = self._registry.get(model, version)
        t = entry.tensor(tensor)
        opt, skip = entry.training_for(tensor)
        g = self._values(t, grad, f"gradient of {model}/{tensor}")
        if not skip:
            check_finite(g, f"gradient of {model}/{tensor}",
                         "; the model's training.non_finite is \"reject\"")
        refresh = self._registry.refresher(model, version, entry)
        op = DensePush(entry, t, pb.PUSH_OPTIMIZE, g, refresh, optimizer_spec(opt), skip,
                       request_id=rid)
        self._router.route(op)
        return op.skipped

    def _push_values(self, model, tensor, values, version, op_kind, request_id):
        rid = check_request_id(request_id)
        entry = self._registry.get(model, version)
        t = entry.tensor(tensor)
        what = f"values for {model}/{tensor}"
        v = self._values(t, values, what)
        check_finite(v, what)
        op = DensePush(entry, t, op_kind, v, self._registry.refresher(model, version, entry),
                       request_id=rid)
        self._router.route(op)

    @staticmethod
    def _values(t, values, what):
        """Flat float32 values of a whole tensor: the tensor's shape, or flat."""
        v = floats(values, what)
        if v.shape != t.shape and v.shape != (t.count,):
            raise ValueError(f"{what} have shape {v.shape}; the tensor's is {t.shape} "
                             f"({t.count} floats)")
        return v.reshape(-1)

    # ------------------------------------------------------------ rows ---

    def pull_rows(self, model, table, ids):
        """Rows `ids` of the table ([len(ids), dim] float32; rows never touched come
        back as the table's initializer makes them)."""
        t, u, inverse = self._rows_args(model, table, ids)
        if len(u) == 0:
            return np.zeros((0, t.dim), dtype=np.float32)
        self._wait_turn(model)
        op = RowsPull(model, table, table_spec(t), u, self._table_refresh(model, table))
        self._router.route(op)
        return op.out[inverse]

    def push_rows(self, model, table, ids, grads, request_id=None):
        """Applies gradients to rows `ids` (grads: [len(ids), dim]) with the table's
        optimizer; the gradients of repeated ids are summed first. Returns the number of
        rows the shards skipped for non-finite gradients (training.non_finite "skip").
        request_id: see the module's text."""
        rid = check_request_id(request_id)
        t, u, inverse = self._rows_args(model, table, ids)
        if t.optimizer is None:
            raise ValueError(f"table {model}/{table} has no optimizer in config.json "
                             "(tables[].optimizer)")
        what = f"gradients for {model}/{table}"
        g = floats(grads, what)
        if g.shape != (len(inverse), t.dim):
            raise ValueError(f"{what} have shape {g.shape}; expected ({len(inverse)}, {t.dim}) "
                             "(one row of dim floats per id)")
        skip = self._registry.get(model).train().non_finite == "skip"
        if not skip:
            check_finite(g, what, "; the model's training.non_finite is \"reject\"")
        if len(u) == 0:
            return 0
        summed = np.zeros((len(u), t.dim), dtype=np.float32)
        np.add.at(summed, inverse, g)
        op = RowsPush(model, table, table_spec(t), u, summed, optimizer_spec(t.optimizer), skip,
                      self._table_refresh(model, table), request_id=rid)
        self._router.route(op)
        return op.skipped

    def _rows_args(self, model, table, ids):
        """(Table, distinct ids as np.uint64, the inverse index into them)."""
        t = self._registry.get(model).table(table)
        a = np.asarray(ids)
        if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
            raise ValueError(f"ids for {model}/{table} must be a 1-D array of integers, not "
                             f"{a.dtype} of shape {a.shape}")
        if a.dtype.kind == "i" and a.size and a.min() < 0:
            raise ValueError(f"ids for {model}/{table} must be >= 0 (found {int(a.min())})")
        u, inverse = np.unique(a.astype(np.uint64), return_inverse=True)
        return t, u, inverse.reshape(-1)

    def _table_refresh(self, model, table):
        def refresh():
            entry = self._registry.get(model, fresh=True)
            return entry.table(table), entry.train().non_finite == "skip"
        return refresh
