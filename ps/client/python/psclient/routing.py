"""routing.py: sends keyed requests to the shards that own the keys, the way the C
client does (ps/client/psclient.c, psclient_route), with every shard's requests in
flight at once.

An operation (see Op) is a list of items (chunks or rows), each with a routing key
and the bytes it puts in a message. A round groups the pending items by their primary
owner on the current ring, cuts each shard's group into requests of at most
max_request_bytes and MAX_KEYS_PER_REQUEST keys, and starts them all (up to
WINDOW_PER_SHARD per shard at a time, so a huge tensor does not sit in memory as
requests all at once). Answers are handled as they come.

A shard answers ABORTED when it does not own a key at its ring epoch; it applied
nothing of that request (a shard checks a whole request before applying any of it).
Those items, and only those, are routed again on a ring fetched afresh, after a short
backoff, up to MAX_ROUNDS rounds. A request that succeeded is never sent again, so
nothing is applied twice. A shard that cannot be reached (UNAVAILABLE, DEADLINE_EXCEEDED:
it died, a failover runs) has its items sent again on a fresh ring for up to
FAILOVER_WAIT_S, for reads and for writes that carry a request id (every write does: one
random id per operation, the same on each try, and a shard applies each key of a
request once, so a lost answer never makes a push land twice). A request refused with FAILED_PRECONDITION or NOT_FOUND is
resent once after the operation's on_stale hook re-read the model's registry entry
(psctl may have changed it); any other failure is reported as psclient.Error once
the round's other requests are done.
"""
import collections
import queue
import secrets
import time

import grpc
import numpy as np

from ._wire import cpb, cpb_grpc, pb_grpc
from .errors import Error
from .ring import Ring

MAX_ROUNDS = 5                     # tries when the ring keeps moving
FAILOVER_WAIT_S = 20.0             # how long unreachable shards' items are tried again
FAILOVER_PAUSE_S = (0.05, 0.5)     # the pause between such tries: first, most
BACKOFF_S = 0.02                   # before round k+1: BACKOFF_S * 2**k
CALL_TIMEOUT_S = 30.0              # one call to a shard
COORDINATOR_TIMEOUT_S = 5.0        # one call to the coordinator
MAX_REQUEST_BYTES = 60 << 20       # one message (the shard takes at most 64 MiB)
MAX_KEYS_PER_REQUEST = 256 * 1024  # the shard's SHARD_MAX_KEYS_PER_REQUEST
WINDOW_PER_SHARD = 4               # requests in flight per shard
CHANNEL_OPTIONS = [("grpc.max_send_message_length", 128 << 20),
                   ("grpc.max_receive_message_length", 128 << 20)]
# Codes after which a write may or may not have been applied.
UNKNOWN_OUTCOME = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE,
                   grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
                   grpc.StatusCode.INTERNAL}
STALE = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND}
UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def new_request_id():
    """A random non-zero 64-bit id for one logical write (PushRequest.request_id)."""
    while True:
        rid = secrets.randbits(64)
        if rid:
            return rid


def check_request_id(request_id):
    """A caller's request id: None, or an int 1..2**64-1 (ValueError otherwise)."""
    if request_id is None:
        return None
    if isinstance(request_id, bool) or not isinstance(request_id, (int, np.integer)) or \
            not 0 < int(request_id) < 2 ** 64:
        raise ValueError(f"request_id must be an integer 1..2**64-1 (psclient.new_request_id()), "
                         f"not {request_id!r}")
    return int(request_id)


class Op:
    """What route() needs from an operation (subclasses in client.py).

    keys: np.uint64 routing key per item; item_bytes: np.int64 message bytes per item;
    method: the ParameterServer method; what: words for messages ("pull fc1.weight");
    write: True when a lost call may have changed something."""
    method = ""
    what = ""
    write = False
    keys = None
    item_bytes = None
    request_id = 0  # writes: set per operation (new_request_id), the same on every try
    # True when the caller gave the request id (a write it may have sent before): no call
    # of it is a first try
    resumed = False
    # True while route() sends every item for the first time (its first round): a shard
    # need not look such a push's keys up (PushRequest.first_try)
    first_try = True

    def request(self, idx, epoch):
        """The request for the items idx (np.int64 array, in this order)."""
        raise NotImplementedError

    def done(self, idx, response):
        """Takes the answer to request(idx); raises Error if it does not fit."""
        raise NotImplementedError

    def on_stale(self):
        """Re-reads what the operation took from the registry; False when it cannot."""
        return False


def split_group(idx, item_bytes, budget, max_keys=MAX_KEYS_PER_REQUEST):
    """Cuts idx (the items of one shard, in order) into runs of at most `budget` bytes
    (a run holds at least one item, so an item larger than the budget goes alone) and
    at most max_keys items."""
    if len(idx) == 0:
        return []
    b = item_bytes[idx]
    room = budget - int(b.max())  # a run starting below k*room ends at most `budget` later
    if room <= 0:
        return [idx[i:i + 1] for i in range(len(idx))]
    cs = np.cumsum(b)
    by_bytes = (cs - b) // room
    by_count = np.arange(len(idx)) // max_keys
    cut = np.flatnonzero((np.diff(by_bytes) != 0) | (np.diff(by_count) != 0)) + 1
    return np.split(idx, cut)


class Router:
    """The ring and the channels to the shards of one client."""

    def __init__(self, coordinator_addr, max_request_bytes=MAX_REQUEST_BYTES,
                 call_timeout_s=CALL_TIMEOUT_S, failover_wait_s=None):
        self.coordinator_addr = coordinator_addr
        self.max_request_bytes = max_request_bytes
        self.call_timeout_s = call_timeout_s
        self.failover_wait_s = failover_wait_s  # None: FAILOVER_WAIT_S (read at each route)
        self.coord_channel = grpc.insecure_channel(coordinator_addr, options=CHANNEL_OPTIONS)
        self.coord = cpb_grpc.CoordinatorStub(self.coord_channel)
        self.ring = None
        self.replication = 1
        self._shards = {}  # addr -> (channel, stub)
        self.requests_sent = 0  # calls made to shards, for tests and curious callers

    def close(self):
        for ch, _ in self._shards.values():
            ch.close()
        self._shards.clear()
        self.coord_channel.close()

    def refresh_ring(self):
        """Fetches the ring from the coordinator."""
        try:
            r = self.coord.GetRing(cpb.GetRingRequest(), timeout=COORDINATOR_TIMEOUT_S)
        except grpc.RpcError as e:
            raise Error(f"cannot get the ring from the coordinator at {self.coordinator_addr}: "
                        f"{e.code().name}: {e.details()}", e.code(), e.details()) from None
        try:
            ring = Ring.parse(r.ring)
        except ValueError as e:
            raise Error(f"the coordinator at {self.coordinator_addr} sent a ring that does not "
                        f"parse: {e}", grpc.StatusCode.INTERNAL) from None
        self.ring, self.replication = ring, r.replication
        live = {m.addr for m in ring.members}
        for addr in [a for a in self._shards if a not in live]:
            self._shards.pop(addr)[0].close()
        return ring

    def _stub(self, addr):
        if addr not in self._shards:
            ch = grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)
            self._shards[addr] = (ch, pb_grpc.ParameterServerStub(ch))
        return self._shards[addr][1]

    def route(self, op):
        """Runs op over all its items; returns when every item is done, else raises."""
        pending = np.arange(len(op.keys), dtype=np.int64)
        first_error, stale_retried = None, False
        wait = FAILOVER_WAIT_S if self.failover_wait_s is None else self.failover_wait_s
        deadline = time.monotonic() + wait
        # with one copy a dead shard's keys have nowhere else to go: say so at once
        retry_unreachable = self.replication >= 2 and (not op.write or op.request_id != 0)
        moved, pause, unreachable = 0, FAILOVER_PAUSE_S[0], False
        op.first_try = not op.resumed
        while moved < MAX_ROUNDS:
            if len(pending) == 0:
                break
            if unreachable:  # wait a little for the ring to move a dead shard's keys on
                time.sleep(pause)
                pause = min(pause * 2, FAILOVER_PAUSE_S[1])
                try:
                    self.refresh_ring()
                except Error:
                    pass  # the coordinator may be down too: keep the ring held
            elif moved > 0:
                time.sleep(BACKOFF_S * (2 ** (moved - 1)))
                self.refresh_ring()
            # Only the refused requests' items go round again: a shard applies a request
            # all or nothing, so a refused one applied nothing, and a request that
            # succeeded is never sent twice (an ADD or an optimizer step lands once).
            again = retry_unreachable and time.monotonic() < deadline
            refused, stale, error, lost = self._round(op, pending, again)
            op.first_try = False  # what goes round again was sent before
            unreachable = bool(lost)
            if lost:
                refused.extend(lost)
            elif refused:
                moved += 1
            first_error = first_error or error
            if stale and not stale_retried and op.on_stale():
                stale_retried = True  # the registry was read again: send those once more
                refused.append(np.concatenate([i for i, _ in stale]))
            elif stale:
                first_error = first_error or stale[0][1]
            pending = np.concatenate(refused) if refused else pending[:0]
            if first_error is not None and len(pending) == 0:
                break
        if first_error is not None:
            if first_error.code in UNREACHABLE:  # the next operation starts on a fresh
                try:                             # ring: a failover may have moved the keys
                    self.refresh_ring()
                except Error:
                    pass
            raise first_error
        if len(pending):
            raise Error(f"{op.what}: the ring kept moving: {len(pending)} items still refused "
                        f"after {MAX_ROUNDS} tries (epoch {self.ring.epoch})",
                        grpc.StatusCode.ABORTED)

    def _round(self, op, pending, again=False):
        """One round over the pending items. Returns (refused index arrays (ABORTED),
        [(index array, Error)] of stale refusals, the first other Error or None, index
        arrays of unreachable shards' items when `again` says to try them again)."""
        ring = self.ring
        if ring is None or not ring.members:
            raise Error(f"{op.what}: no shards on the ring (epoch "
                        f"{ring.epoch if ring else 0})", grpc.StatusCode.UNAVAILABLE)
        owners = ring.primaries(op.keys[pending])
        order = np.argsort(owners, kind="stable")
        owners, pending = owners[order], pending[order]
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        queues = {}
        for s, e in zip(starts, np.r_[starts[1:], len(owners)]):
            member = ring.members[int(owners[s])]
            parts = split_group(pending[s:e], op.item_bytes, self.max_request_bytes)
            queues[member.index] = (member, collections.deque(parts))
        done_q, inflight = queue.Queue(), 0
        refused, stale, first_error, lost = [], [], None, []

        def start(member, idx):
            method = getattr(self._stub(member.addr), op.method)
            fut = method.future(op.request(idx, ring.epoch), timeout=self.call_timeout_s)
            self.requests_sent += 1
            fut.add_done_callback(lambda f: done_q.put((member, idx, f)))

        for member, parts in queues.values():
            for _ in range(min(WINDOW_PER_SHARD, len(parts))):
                start(member, parts.popleft())
                inflight += 1
        while inflight:
            member, idx, fut = done_q.get()
            inflight -= 1
            err = fut.exception()
            if err is not None and not isinstance(err, grpc.RpcError):
                raise err  # not an answer from the shard: a bug on this side
            if err is None:
                try:
                    op.done(idx, fut.result())
                except Error as e:
                    first_error = first_error or e
            elif err.code() == grpc.StatusCode.ABORTED:
                refused.append(idx)
            elif again and err.code() in UNREACHABLE:
                lost.append(idx)
            else:
                e = self._call_error(op, member, err)
                if err.code() in STALE:
                    stale.append((idx, e))
                else:
                    first_error = first_error or e
            parts = queues[member.index][1]
            if parts:
                start(member, parts.popleft())
                inflight += 1
        return refused, stale, first_error, lost

    def _call_error(self, op, member, err):
        code = err.code()
        msg = f"{op.what} on shard {member.id} ({member.addr}): {code.name}: {err.details()}"
        if op.write and code in UNKNOWN_OUTCOME:
            msg += " (the call was lost: the shard may or may not have applied it; pull to see)"
        return Error(msg, code, err.details())
