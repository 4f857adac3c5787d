"""ps-shard against hostile and careless clients, driven with grpcio: huge repeated-field
counts, lengths whose sum overflows, long names, messages near the 64 MiB limit,
Subscribe streams past the limit and streams never read, a 100k-key push and many
concurrent pushes with live subscribers (every update must arrive, in seq order), ADDs
that would overflow to infinity, ASSIGNs of another length, and the value-memory quota.
The shard must answer each with a clear status and stay up; at the end it must exit 0
on SIGTERM with no sanitizer report (this suite also runs in the ASan+UBSan build).
Defects of issue 6 shown here: D2 (subscriber use-after-free / silently stopped
streams), D4 (non-finite results), D5 (reshaping ASSIGN), D9 (unbounded resources)."""
import struct
import threading
import time

import grpc
import numpy as np
import pytest

from conftest import BUILD  # noqa: F401 (this folder's conftest also generates the stubs)
from test_shard_protocol import BIG_MESSAGES, shard_stub, start_coordinator, start_shard, stop_all, wait_ring

import coordinator_pb2_grpc as cpb_grpc  # noqa: E402
import ps_pb2 as pb  # noqa: E402

MAX_KEYS = 256 * 1024  # SHARD_MAX_KEYS_PER_REQUEST
MAX_NAME = 1024  # SHARD_MAX_NAME_BYTES
MIB = 1 << 20


class OneShard:
    """A coordinator and one shard (which owns every key), with extra shard flags."""

    def __init__(self, tmp, flags):
        self.tmp = str(tmp)
        self.procs = []
        p, coord = start_coordinator(self.tmp)
        self.procs.append(("coord", p))
        try:
            self.proc, self.addr = start_shard(self.tmp, coord, "shard-1", *flags)
        except BaseException:
            stop_all(self.tmp, self.procs)  # do not leave the coordinator running
            raise
        self.procs.append(("shard-1", self.proc))
        self.epoch = wait_ring(cpb_grpc.CoordinatorStub(grpc.insecure_channel(coord)), ["shard-1"])
        self.s = shard_stub(self.addr)

    def health(self):
        return self.s.Health(pb.HealthRequest(), timeout=10)

    def push(self, keys, values, op=pb.PUSH_ASSIGN, lengths=None, names=None, timeout=60):
        values = np.asarray(values, dtype="<f4")
        if lengths is None:
            lengths = [values.size // len(keys)] * len(keys)
        return self.s.Push(pb.PushRequest(epoch=self.epoch, keys=keys, lengths=lengths, op=op,
                                          names=names or [], values=values.tobytes()),
                           timeout=timeout)

    def pull(self, keys):
        r = self.s.Pull(pb.PullRequest(epoch=self.epoch, keys=keys), timeout=60)
        return np.frombuffer(r.values, dtype="<f4"), list(r.versions)

    def refused(self, call, code, *words):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == code, e.value.details()
        for w in words:
            assert w in e.value.details(), e.value.details()
        assert self.proc.poll() is None, "the shard died"
        self.health()  # and still answers


@pytest.fixture
def shard(tmp_path):
    started = []

    def make(*flags):
        d = tmp_path / f"s{len(started)}"
        d.mkdir()
        started.append(OneShard(d, flags))
        return started[-1]

    yield make
    for sh in started:
        stop_all(sh.tmp, sh.procs)


class Subscriber(threading.Thread):
    """Reads a Subscribe stream on a thread, keeping every non-keepalive Update."""

    def __init__(self, sh, from_seq, incarnation):
        super().__init__(daemon=True)
        self.call = sh.s.Subscribe(pb.SubscribeRequest(from_seq=from_seq, incarnation=incarnation),
                                   timeout=600)
        self.updates = []
        self.error = None
        self.start()

    def run(self):
        try:
            for u in self.call:
                if not u.keepalive:
                    self.updates.append(u)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                self.error = e

    def wait_live(self, sh, marker_key=0, timeout=30):
        """Pushes one update and waits until this stream delivered it, so the stream is
        known to be open and reading before a test's pushes; returns its seq."""
        seq = sh.push([marker_key], [0.0]).seq
        deadline = time.monotonic() + timeout
        while not any(u.seq == seq for u in self.updates):
            assert self.error is None, self.error
            assert time.monotonic() < deadline, f"the stream delivered nothing: {self.updates}"
            time.sleep(0.02)
        return seq

    def wait_for(self, seq, timeout=300):
        """Waits until the update with `seq` (or a resync) arrived, then stops reading."""
        deadline = time.monotonic() + timeout
        while not (self.updates and (self.updates[-1].seq >= seq or self.updates[-1].resync)):
            assert self.error is None, self.error
            assert time.monotonic() < deadline, \
                f"stream stalled: {len(self.updates)} updates, last {self.updates[-1:]}"
            time.sleep(0.05)
        self.call.cancel()
        self.join(timeout=30)
        return self.updates


def wait_subscribers(sh, n, timeout=20):
    deadline = time.monotonic() + timeout
    while sh.health().subscribers != n:
        assert time.monotonic() < deadline, f"{sh.health().subscribers} subscribers, want {n}"
        time.sleep(0.02)


def assert_in_order(updates, seq0, last):
    """Every update seq0+1..last exactly once, in order, none a resync."""
    assert not any(u.resync for u in updates), "told to resync although the log holds it all"
    seqs = [u.seq for u in updates]
    assert seqs == list(range(seq0 + 1, last + 1)), (seqs[:3], seqs[-3:], seq0, last)
    assert all(u.version == u.seq for u in updates)


# ------------------------------------------------------------------ counts and sizes ---

def test_huge_key_counts_are_refused_by_name(shard):
    sh = shard()
    keys = list(range(1, 1_000_001))
    sh.refused(lambda: sh.s.Push(pb.PushRequest(epoch=sh.epoch, keys=keys, lengths=[1], values=b"\0" * 4),
                                 timeout=60),
               grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_KEYS} keys per request")
    sh.refused(lambda: sh.s.Push(pb.PushRequest(epoch=sh.epoch, keys=keys, lengths=keys), timeout=60),
               grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_KEYS} keys per request")
    sh.refused(lambda: sh.s.Pull(pb.PullRequest(epoch=sh.epoch, keys=keys), timeout=60),
               grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_KEYS} keys per request")
    sh.refused(lambda: sh.s.Stat(pb.StatRequest(epoch=sh.epoch, keys=keys), timeout=60),
               grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_KEYS} keys per request")
    sh.refused(lambda: sh.s.Push(pb.PushRequest(epoch=sh.epoch, keys=keys[:200_000], lengths=[1, 2, 3]),
                                 timeout=60),
               grpc.StatusCode.INVALID_ARGUMENT, "200000 keys but 3 lengths")
    assert sh.health().keys == 0


def test_lengths_whose_sum_overflows_are_refused(shard):
    sh = shard()
    eight = b"\0" * 8
    # as uint32, 2^31 + 2^31 + 2 wraps to 2 floats: exactly the 8 bytes sent
    for lengths in ([1 << 31, 1 << 31, 2], [0xFFFFFFFF, 0xFFFFFFFF, 4]):
        sh.refused(lambda: sh.s.Push(pb.PushRequest(epoch=sh.epoch, keys=[1, 2, 3], lengths=lengths,
                                                    values=eight)),
                   grpc.StatusCode.INVALID_ARGUMENT, "floats")
    big = (64 * MIB - MIB) // 4  # SHARD_MAX_CHUNK_FLOATS: allowed alone, not five of them
    sh.refused(lambda: sh.s.Push(pb.PushRequest(epoch=sh.epoch, keys=[1, 2, 3, 4, 5], lengths=[big] * 5,
                                                values=eight)),
               grpc.StatusCode.INVALID_ARGUMENT, "add up to more than")
    assert sh.health().keys == 0


def test_long_names_are_refused(shard):
    sh = shard()
    sh.refused(lambda: sh.push([1, 2], [1, 2], names=["ok", "x" * (MAX_NAME + 1)]),
               grpc.StatusCode.INVALID_ARGUMENT, f"longer than {MAX_NAME} bytes", "index 1")
    sh.refused(lambda: sh.push([1], [1], names=["y" * (4 * MIB)]),
               grpc.StatusCode.INVALID_ARGUMENT, f"longer than {MAX_NAME} bytes")
    assert sh.health().keys == 0
    sh.push([1], [1], names=["z" * MAX_NAME])  # the limit itself is allowed
    assert sh.health().keys == 1


def test_messages_near_the_limit(shard):
    sh = shard()
    n = (62 * MIB) // 4
    big = np.arange(n, dtype="<f4")
    sh.push([1], big, timeout=120)
    got, _ = sh.pull([1])
    assert np.array_equal(got, big)
    sh.push([2], np.ones(2 * MIB // 4, dtype="<f4"))
    sh.refused(lambda: sh.pull([1, 2]), grpc.StatusCode.RESOURCE_EXHAUSTED, "pull fewer keys")
    over = np.zeros((65 * MIB) // 4, dtype="<f4")  # past gRPC's 64 MiB limit
    sh.refused(lambda: sh.push([3], over, timeout=120), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert sh.health().keys == 2


def test_malformed_payloads_get_invalid_argument(shard):
    sh = shard()
    ch = grpc.insecure_channel(sh.addr)
    for method in ("Push", "Pull", "Stat", "Health", "Subscribe"):
        call = (ch.unary_stream if method == "Subscribe" else ch.unary_unary)(
            f"/ps.ParameterServer/{method}")
        for payload in (b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f" + b"\0" * 16):
            def send():
                r = call(payload, timeout=10)
                if method == "Subscribe":
                    next(r)
            sh.refused(send, grpc.StatusCode.INVALID_ARGUMENT, "malformed")


# ------------------------------------------------------------------ subscribers ---

def test_100k_key_push_reaches_a_live_subscriber_in_order(shard):
    """D2: the old Subscribe read a log entry after the write released it; one 100k-key
    push with a subscriber made ASan report it, and without ASan the stream could stop
    silently or skip to a resync."""
    sh = shard()
    h = sh.health()
    sub = Subscriber(sh, h.seq, h.incarnation)
    seq0 = sub.wait_live(sh)
    n = 100_000
    keys = list(range(1, n + 1))
    r1 = sh.push(keys, np.arange(n, dtype="<f4"), timeout=120)
    r2 = sh.push(keys, np.ones(n, dtype="<f4"), op=pb.PUSH_ADD, timeout=120)
    updates = sub.wait_for(r2.seq)
    assert_in_order(updates, h.seq, r2.seq)
    updates = updates[seq0 - h.seq:]  # after the marker
    assert [u.key for u in updates] == keys + keys
    assert all(u.prev_version == 0 and u.op == pb.PUSH_ASSIGN for u in updates[:n])
    assert [u.prev_version for u in updates[n:]] == list(r1.versions)
    assert list(r2.versions) == [u.version for u in updates[n:]]
    assert all(u.op == pb.PUSH_ASSIGN for u in updates[n:])  # an ADD streams the sums
    for i in (0, 777, n - 1):
        assert struct.unpack("<f", updates[i].values) == (float(i),)
        assert struct.unpack("<f", updates[n + i].values) == (float(i) + 1.0,)
    got, versions = sh.pull([1, n])
    assert list(got) == [1.0, float(n)] and versions == [r2.versions[0], r2.versions[-1]]


def test_concurrent_pushes_reach_every_subscriber_in_order(shard):
    sh = shard()
    keys = list(range(1, 251))
    base = sh.push(keys, np.zeros(len(keys), dtype="<f4"))
    h = sh.health()
    subs = [Subscriber(sh, h.seq, h.incarnation) for _ in range(2)]
    seq0 = max(sub.wait_live(sh, marker_key=1000 + i) for i, sub in enumerate(subs))
    errors = []

    def pusher():
        try:
            for _ in range(20):
                sh.push(keys, np.ones(len(keys), dtype="<f4"), op=pb.PUSH_ADD)
        except grpc.RpcError as e:
            errors.append(e)

    threads = [threading.Thread(target=pusher) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    last = sh.health().seq
    assert last == seq0 + 4 * 20 * len(keys)
    for sub in subs:
        updates = sub.wait_for(last)
        assert_in_order(updates, h.seq, last)
        held = dict(zip(keys, base.versions))
        for u in updates[seq0 - h.seq:]:  # each ADD applies onto exactly the version before
            assert u.prev_version == held[u.key], u
            held[u.key] = u.version
    got, versions = sh.pull(keys)
    assert np.all(got == 80) and versions == [held[k] for k in keys]


def test_subscribers_past_the_limit_are_refused(shard):
    sh = shard("--max-subscribers", "3")
    h = sh.health()
    subs = [Subscriber(sh, h.seq, h.incarnation) for _ in range(3)]
    wait_subscribers(sh, 3)
    extra = sh.s.Subscribe(pb.SubscribeRequest(from_seq=h.seq), timeout=30)
    sh.refused(lambda: next(extra), grpc.StatusCode.RESOURCE_EXHAUSTED, "--max-subscribers 3")
    subs[0].call.cancel()
    wait_subscribers(sh, 2)
    again = sh.s.Subscribe(pb.SubscribeRequest(from_seq=h.seq, incarnation=h.incarnation), timeout=30)
    assert next(again).keepalive  # admitted: its first message is the idle keepalive
    again.cancel()
    for s in subs[1:]:
        s.call.cancel()


def test_streams_never_read_do_not_stall_the_shard(shard):
    """Streams whose client never reads fill their flow-control windows and block the
    shard's writes to them; pushes, pulls and shutdown must not wait for them."""
    sh = shard("--log-mb", "8")
    h = sh.health()
    unread = [sh.s.Subscribe(pb.SubscribeRequest(from_seq=h.seq), timeout=600) for _ in range(8)]
    wait_subscribers(sh, 8)
    chunk = np.ones(64 * 1024, dtype="<f4")  # 256 KiB per update
    for i in range(80):  # 20 MiB of updates, past the windows and the 8 MiB log
        sh.push([i % 4], chunk, timeout=30)
    got, _ = sh.pull([0, 1, 2, 3])
    assert got.size == 4 * chunk.size
    assert sh.health().subscribers == 8
    del unread  # left open: the shard must still shut down cleanly (fixture teardown)


# ------------------------------------------------------------------ values ---

def test_add_that_would_overflow_is_refused(shard):
    """D4: two finite ADDs could overflow a weight to inf, and replicas then served NaN."""
    sh = shard()
    sh.push([1, 2], [3e38, 1.0, 5.0, 6.0])
    before = sh.pull([1, 2])
    sh.refused(lambda: sh.push([2, 1], [1.0, 1.0, 3e38, 0.0], op=pb.PUSH_ADD),
               grpc.StatusCode.INVALID_ARGUMENT, "0000000000000001", "index 1", "value 0",
               "non-finite")
    after = sh.pull([1, 2])
    assert np.array_equal(before[0], after[0]) and before[1] == after[1]  # key 2 unchanged too


def test_assign_of_another_length_is_refused(shard):
    """D5: an ASSIGN of another length silently reshaped the chunk."""
    sh = shard()
    sh.push([1], [1, 2, 3, 4], names=["m/w#0"])
    before = sh.pull([1])
    for n in (3, 5):
        sh.refused(lambda: sh.push([1], np.zeros(n, dtype="<f4")), grpc.StatusCode.INVALID_ARGUMENT,
                   "holds 4 floats", "m/w#0", "upload a new model version to change shapes")
    after = sh.pull([1])
    assert np.array_equal(before[0], after[0]) and before[1] == after[1]


def test_quota_refuses_new_keys_and_applies_nothing(shard):
    """D9: ASSIGN of new keys had no memory bound."""
    sh = shard("--max-bytes", "4096")
    assert sh.health().max_bytes == 4096
    sh.push([1], np.zeros(1000, dtype="<f4"))
    before = sh.pull([1])
    sh.refused(lambda: sh.push([1, 2], np.ones(1100, dtype="<f4"), lengths=[1000, 100]),
               grpc.StatusCode.RESOURCE_EXHAUSTED, "--max-bytes", "nothing was applied")
    st = sh.s.Stat(pb.StatRequest(epoch=sh.epoch, keys=[1, 2]))
    assert list(st.lengths) == [1000, 0] and st.versions[0] == before[1][0]
    assert sh.health().bytes == 4000
    sh.push([1], np.ones(1000, dtype="<f4"))  # replacing held values needs no new memory
