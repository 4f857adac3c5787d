"""Replication and failover (issue 8 item 2): with R = 2 (the coordinator's default) every
acknowledged push is on both owners of its keys; when a primary is killed (-9) during a
stream of ADDs, the coordinator takes it off the ring, the next owner serves its keys,
clients retry on it, and the final value equals the sum of the acknowledged pushes:
nothing acknowledged is lost and nothing is applied twice (request ids). Also: a retried
push with the same request id applies once; reads may go to any owner; a backup that
restarts is synced anew; a shard drained and added back (the same process) gets every
change after it; a joining shard killed the moment its join commits and restarted at once
loses nothing acknowledged, and no owner applies anything twice."""
import pathlib
import signal
import sys
import threading
import time

import grpc
import numpy as np
import pytest

from conftest import SOURCE, chunk_owners, pull_at, wait_for, write_model

sys.path.insert(0, str(SOURCE / "ps" / "client" / "python"))  # this checkout's package
import psclient  # noqa: E402
import ps_pb2 as pb  # noqa: E402
import ps_pb2_grpc as pb_grpc  # noqa: E402

FLOATS = 5 * 65536 + 123  # 6 chunks: the keys spread over the shards
CONFIG = {
    "name": "wide",
    "max_batch_size": 1,
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, FLOATS]}],
    "layers": [{"op": "dense", "input": "x", "output": "y", "weight": "big", "bias": "b"}],
}


def upload_wide(c, tmp):
    """A model "wide" whose tensor "big" spans several chunks, all zeros."""
    root = write_model(pathlib.Path(tmp) / "wide", CONFIG,
                       {"big": np.zeros((FLOATS, 1), "<f4"), "b": np.zeros(FLOATS, "<f4")})
    c.ok("model", "upload", str(root))


def ring_epoch(c):
    return c.ok("status")["epoch"]


def test_every_owner_holds_every_acknowledged_push(make_cluster, tmp_path):
    c = make_cluster(shards=3)
    upload_wide(c, tmp_path)
    cl = psclient.Client(c.coordinator)
    try:
        for _ in range(3):
            cl.add("wide", "big", np.ones(FLOATS, np.float32), version=1)
    finally:
        cl.close()
    epoch = ring_epoch(c)
    chunks = chunk_owners(c, "wide", "big")
    assert all(len(addrs) == 2 for _, addrs in chunks), chunks
    for key, addrs in chunks:
        primary, backup = (pull_at(a, key, epoch) for a in addrs)
        assert np.all(primary == 3.0), (key, primary[:4])
        assert np.array_equal(primary, backup), f"backup {addrs[1]} differs for key {key:x}"


def test_retried_push_with_the_same_request_id_applies_once(make_cluster, tmp_path):
    c = make_cluster(shards=2)
    upload_wide(c, tmp_path)
    epoch = ring_epoch(c)
    key, addrs = chunk_owners(c, "wide", "big")[0]
    n = len(pull_at(addrs[0], key, epoch))
    ones = np.ones(n, "<f4").tobytes()
    with grpc.insecure_channel(addrs[0]) as ch:
        stub = pb_grpc.ParameterServerStub(ch)
        for _ in range(3):  # the same request three times: one ADD
            stub.Push(pb.PushRequest(epoch=epoch, keys=[key], lengths=[n], op=pb.PUSH_ADD,
                                     values=ones, request_id=0xFEEDFACE), timeout=10)
        stub.Push(pb.PushRequest(epoch=epoch, keys=[key], lengths=[n], op=pb.PUSH_ADD,
                                 values=ones, request_id=0xFEEDFACF), timeout=10)
        # a first try the shard does not look up, then its retry, which it does: one ADD
        push = dict(epoch=epoch, keys=[key], lengths=[n], op=pb.PUSH_ADD, values=ones)
        stub.Push(pb.PushRequest(request_id=0xFEEDFAD0, first_try=True, **push), timeout=10)
        stub.Push(pb.PushRequest(request_id=0xFEEDFAD0, **push), timeout=10)
        # a retry that overtook its first try (the client timed out, the first try came
        # late): the retry applies, and the late first try, looked up because a retry of
        # its request came, is refused
        stub.Push(pb.PushRequest(request_id=0xFEEDFAD1, **push), timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            stub.Push(pb.PushRequest(request_id=0xFEEDFAD1, first_try=True, **push), timeout=10)
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE,  # "send it again"
                                  grpc.StatusCode.FAILED_PRECONDITION), e.value.details()
        assert "an earlier try of it applied" in e.value.details()
    for a in addrs:
        assert np.all(pull_at(a, key, epoch) == 4.0), a


class Adder(threading.Thread):
    """ADDs of 1.0 to every float of tensor "big" (of wide, or another model of `floats`
    floats), counting the acknowledged ones and the longest time between two
    acknowledgements. With resume, an ADD that raised is tried again with its request id
    until it is acknowledged (also after stop() is asked, for up to a minute), so every
    ADD sent lands once: the values must equal `acked` exactly."""

    def __init__(self, coordinator, model="wide", floats=FLOATS, resume=False, **client_args):
        super().__init__(daemon=True)
        self.client = psclient.Client(coordinator, **client_args)
        self.model, self.floats, self.resume = model, floats, resume
        self.halt = threading.Event()
        self.acked, self.failed, self.longest_gap = 0, [], 0.0
        self.unresolved = 0  # resume: an ADD still not acknowledged when it gave up
        self.hold, self.idle = threading.Event(), threading.Event()  # pause()

    def run(self):
        last = time.monotonic()
        delta = np.ones(self.floats, np.float32)
        rid, give_up = None, None
        while not self.halt.is_set() or (give_up is not None and time.monotonic() < give_up):
            if self.hold.is_set() and rid is None:  # paused between two ADDs
                self.idle.set()
                time.sleep(0.005)
                continue
            self.idle.clear()
            if self.resume and rid is None:
                rid = psclient.new_request_id()
            try:
                self.client.add(self.model, "big", delta, version=1, request_id=rid)
            except psclient.Error as e:
                self.failed.append(str(e))
                if rid is not None and give_up is None:
                    give_up = time.monotonic() + 60
                continue
            rid, give_up = None, None
            self.acked += 1
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - last)
            last = now
        self.unresolved = int(rid is not None)  # gave up on it: it may have landed in part

    def pause(self):
        """Returns once no ADD is on its way (the last one raised is acknowledged first):
        every value then equals `acked`. unpause() goes on."""
        self.hold.set()
        wait_for("the adder to pause", self.idle.is_set, timeout=120)

    def unpause(self):
        self.hold.clear()

    def stop(self):
        self.halt.set()
        self.join(timeout=120)
        assert not self.is_alive(), "the adder did not stop"
        self.client.close()


def test_kill_a_primary_during_adds_loses_nothing(make_cluster, tmp_path):
    c = make_cluster(shards=3)
    upload_wide(c, tmp_path)
    victim = chunk_owners(c, "wide", "big")[0][1][0]  # the primary of the first chunk
    name = next(n for n, p in c.procs.items() if n != "coordinator" and victim.endswith(f":{p.port}"))
    adder = Adder(c.coordinator)
    adder.start()
    deadline = time.monotonic() + 30
    while adder.acked < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    c.procs[name].proc.kill()  # SIGKILL
    c.procs[name].proc.wait(timeout=10)
    killed_at, acked_then = time.monotonic(), adder.acked
    while adder.acked < acked_then + 10 and time.monotonic() < killed_at + 60:
        time.sleep(0.05)
    adder.stop()
    assert not adder.failed, adder.failed[:3]
    assert adder.acked >= acked_then + 10, "pushes did not succeed again after the kill"
    cl = psclient.Client(c.coordinator)
    try:
        value = cl.pull("wide", "big", version=1)
    finally:
        cl.close()
    print(f"acknowledged {adder.acked} ADDs; the longest wait for one: "
          f"{adder.longest_gap * 1000:.0f} ms (failover)")
    assert np.all(value == float(adder.acked)), (
        f"values {np.unique(value)[:5]} != {adder.acked} acknowledged ADDs")
    nodes = c.nodes()
    assert not nodes[name]["in_ring"], nodes[name]
    for key, addrs in chunk_owners(c, "wide", "big"):  # R copies again
        assert len(addrs) == 2
        vals = [pull_at(a, key, ring_epoch(c)) for a in addrs]
        assert np.array_equal(vals[0], vals[1]), key


def test_a_stopped_shard_holds_pushes_no_longer_than_a_failover(make_cluster, tmp_path):
    """A shard that stops (SIGSTOP: it neither reads nor answers, as behind a cut
    network) while ADDs stream: its primary's Replicate calls to it stall, and a client's
    pushes to it too. The coordinator takes it off the ring, the calls stuck on it end at
    their deadline (the client's 5 s here) or sooner, pushes go on through the next
    owners, and every acknowledged ADD is there once."""
    c = make_cluster(shards=3)
    upload_wide(c, tmp_path)
    victim = chunk_owners(c, "wide", "big")[0][1][1]  # a backup of the first chunk
    name = next(n for n, p in c.procs.items() if n != "coordinator" and victim.endswith(f":{p.port}"))
    adder = Adder(c.coordinator, call_timeout_s=5)
    adder.start()
    deadline = time.monotonic() + 30
    while adder.acked < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc = c.procs[name].proc
    proc.send_signal(signal.SIGSTOP)
    try:
        stopped_at, acked_then = time.monotonic(), adder.acked
        while adder.acked < acked_then + 10 and time.monotonic() < stopped_at + 30:
            time.sleep(0.05)
        took = time.monotonic() - stopped_at
    finally:
        proc.send_signal(signal.SIGCONT)
    adder.stop()
    assert not adder.failed, adder.failed[:3]
    assert adder.acked >= acked_then + 10, f"pushes stalled behind the stopped shard ({took:.0f} s)"
    print(f"10 ADDs acknowledged {took:.1f} s after the stop; the longest wait for one: "
          f"{adder.longest_gap * 1000:.0f} ms")
    cl = psclient.Client(c.coordinator)
    try:
        value = cl.pull("wide", "big", version=1)
    finally:
        cl.close()
    assert np.all(value == float(adder.acked)), (
        f"values {np.unique(value)[:5]} != {adder.acked} acknowledged ADDs")


def test_writes_that_raised_and_were_retried_with_their_request_id_land_once(
        make_cluster, tmp_path):
    """The client's own retries are turned off (no failover wait), so while a killed
    primary's keys fail over, ADDs raise after landing on the live shards' chunks; the
    adder tries each again with its request id until it is acknowledged. Every chunk then
    holds exactly the acknowledged count: nothing landed twice, nothing was lost. (Trying
    again with a fresh id would add the landed part twice.)"""
    c = make_cluster(shards=3)
    upload_wide(c, tmp_path)
    victim = chunk_owners(c, "wide", "big")[0][1][0]
    name = next(n for n, p in c.procs.items() if n != "coordinator" and victim.endswith(f":{p.port}"))
    adder = Adder(c.coordinator, resume=True, failover_wait_s=0)
    adder.start()
    deadline = time.monotonic() + 30
    while adder.acked < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    c.procs[name].proc.kill()
    c.procs[name].proc.wait(timeout=10)
    killed_at, acked_then = time.monotonic(), adder.acked
    while adder.acked < acked_then + 10 and time.monotonic() < killed_at + 60:
        time.sleep(0.05)
    adder.stop()
    assert adder.failed, "no ADD raised: the kill was not seen"
    assert adder.unresolved == 0 and adder.acked >= acked_then + 10, (
        adder.acked, acked_then, adder.failed[:2], adder.failed[-2:])
    cl = psclient.Client(c.coordinator)
    try:
        value = cl.pull("wide", "big", version=1)
    finally:
        cl.close()
    print(f"{adder.acked} ADDs acknowledged; {len(adder.failed)} tries raised and were retried")
    assert np.all(value == float(adder.acked)), (
        f"values {np.unique(value)[:5]} != {adder.acked} acknowledged ADDs")


def frame(kind, payload):
    """A Replicate record: u8 type, 3 zero bytes, u32 length, payload."""
    return bytes([kind, 0, 0, 0]) + len(payload).to_bytes(4, "little") + payload


def test_hostile_replicate_calls_get_clear_statuses(make_cluster):
    """Replicate is for primaries, but anyone can call it: bad framing, counts, numbers,
    records and incarnations are refused with a clear status, nothing is applied, and
    the shard keeps serving."""
    c = make_cluster(shards=1)
    addr = c.procs["shard-1"].addr
    with grpc.insecure_channel(addr) as ch:
        stub = pb_grpc.ParameterServerStub(ch)
        health = stub.Health(pb.HealthRequest(), timeout=5)
        inc = health.incarnation
        base = dict(incarnation=7, epoch=health.epoch)  # a sync's must be the shard's

        def refused(code, words, **kw):
            with pytest.raises(grpc.RpcError) as e:
                stub.Replicate(pb.ReplicateRequest(**{**base, **kw}), timeout=10)
            assert e.value.code() == code, (kw, e.value)
            assert words in e.value.details(), e.value.details()

        inv = grpc.StatusCode.INVALID_ARGUMENT
        refused(inv, "at most", **{"from": "x"}, first=1, count=1 << 20)
        refused(inv, "at most", **{"from": "x"}, sync=True, count=(1 << 20) + 1)
        # a sync call may claim up to 2^20 records (an image's request ids), but every
        # one is checked against the bytes sent before anything is sized by the count
        refused(inv, "cut short", **{"from": "x"}, sync=True, count=1 << 20,
                records=frame(4, b"\x00" * 8))
        refused(inv, "start at 1", **{"from": "x"}, first=0, count=1)
        refused(inv, "cut short", **{"from": "x"}, first=1, count=2, records=frame(1, b"abc"))
        refused(inv, "claims", **{"from": "x"}, first=1, count=1,
                records=bytes([1, 0, 0, 0]) + (1 << 31).to_bytes(4, "little"))
        refused(inv, "follow", **{"from": "x"}, first=1, count=1,
                records=frame(1, b"") + b"junk")
        refused(inv, "cannot be applied", **{"from": "x"}, first=1, count=1,
                records=frame(1, b"\x01" * 64))  # a push record that does not decode
        refused(inv, "cannot be applied", **{"from": "x"}, first=1, count=1,
                records=frame(99, b"\x00" * 16))  # an unknown record type
        refused(inv, "cannot be applied", **{"from": "x"}, sync=True, count=1,
                records=frame(16, b"\x00" * 40))  # an image that does not decode
        # request ids a sync sends (type 4): a count past the payload or past the limit
        dedup_head = bytes([1, 0, 0, 0])
        refused(inv, "cannot be applied", **{"from": "x"}, sync=True, count=1,
                records=frame(4, dedup_head + (3).to_bytes(4, "little") + b"\x07" * 8 + b"\x01" * 8))
        refused(inv, "cannot be applied", **{"from": "x"}, sync=True, count=1,
                records=frame(4, dedup_head + (1 << 31).to_bytes(4, "little") + b"\x07" * 8))
        # a batch far ahead of its stream waits a bounded time for the ones before it
        t0 = time.monotonic()
        refused(grpc.StatusCode.UNAVAILABLE, "have not arrived", **{"from": "y"}, first=1000,
                count=1, records=frame(2, b""))
        assert time.monotonic() - t0 < 10
        refused(grpc.StatusCode.FAILED_PRECONDITION, "restarted", **{"from": "x"}, first=1,
                count=0, to_incarnation=inc ^ 1)
        refused(inv, "from", first=1, count=0)  # no sender
        assert stub.Health(pb.HealthRequest(), timeout=5).keys == 0  # nothing applied


def chunk_image(key, values, version):
    """A chunk image record (ps/shard/image.h): kind 1, format 1, no optimizer, len, key,
    version, steps 0, no state, no name; then the values."""
    values = np.asarray(values, "<f4")
    head = (bytes([1, 1, 0, 0]) + len(values).to_bytes(4, "little") + key.to_bytes(8, "little")
            + version.to_bytes(8, "little") + bytes(8) + bytes(8))
    return head + values.tobytes()


def test_a_stale_sync_is_refused_and_installs_nothing(make_cluster):
    """A sync's images replace their keys whole, so a backup installs them only under the
    ring they were exported under: from a primary whose ring is older (it may no longer
    be the keys' primary) or newer (not yet), a sync is refused with FAILED_PRECONDITION
    and changes nothing; under the shard's own epoch the same sync installs. Nor does a
    sync older than one its primary began after it, one from the primary's run before a
    restart, or one that reached its turn after its deadline, install."""
    c = make_cluster(shards=1)
    addr = c.procs["shard-1"].addr
    key = 0x5EED
    with grpc.insecure_channel(addr) as ch:
        stub = pb_grpc.ParameterServerStub(ch)
        epoch = stub.Health(pb.HealthRequest(), timeout=5).epoch
        start = np.arange(4, dtype="<f4")
        stub.Push(pb.PushRequest(epoch=epoch, keys=[key], lengths=[4], values=start.tobytes()),
                  timeout=10)

        def sync(under, value=9, num=0, inc=5, timeout=10):
            image = frame(16, chunk_image(key, [value] * 4, version=(1 << 40) + value))
            return stub.Replicate(pb.ReplicateRequest(**{"from": "old-primary"}, incarnation=inc,
                                                      epoch=under, sync=True, count=1, first=num,
                                                      records=image, resume=1), timeout=timeout)

        def refused(words, code=grpc.StatusCode.FAILED_PRECONDITION, **kw):
            with pytest.raises(grpc.RpcError) as e:
                sync(**kw)
            assert e.value.code() == code, (kw, e.value)
            assert words in e.value.details(), e.value.details()

        for under in (epoch - 1, epoch + 1, 0, (1 << 64) - 1):
            refused(f"holds epoch {epoch}", under=under)
            assert np.array_equal(pull_at(addr, key, epoch), start), under  # nothing installed
        sync(epoch, num=5)  # the same sync under the shard's ring: installed
        assert np.all(pull_at(addr, key, epoch) == 9)
        # an older sync of the same primary (sent before, delayed) is not installed after it
        refused("after a later sync", under=epoch, value=7, num=4)
        assert np.all(pull_at(addr, key, epoch) == 9)
        sync(epoch, value=8, num=1, inc=6)  # the primary restarted: it numbers anew
        assert np.all(pull_at(addr, key, epoch) == 8)
        # a call from its run before the restart, still on its way, changes nothing
        refused("earlier run", under=epoch, value=7, num=6, inc=5)
        assert np.all(pull_at(addr, key, epoch) == 8)
        refused("must not wrap", grpc.StatusCode.INVALID_ARGUMENT, under=epoch, num=(1 << 64) - 1,
                inc=6)
        # a sync that waited for its stream past its deadline (its sender gave up on it and
        # may have sent newer changes since) is not installed once the stream is free: the
        # stream is kept busy by a sync waiting (2 s) for a ring the shard never gets
        busy = threading.Thread(target=lambda: pytest.raises(grpc.RpcError, sync, under=epoch + 1,
                                                             num=7, inc=6))
        busy.start()
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as e:
            sync(epoch, value=3, num=8, inc=6, timeout=0.5)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.value
        busy.join()
        time.sleep(0.5)  # the late one's handler has had the stream
        assert np.all(pull_at(addr, key, epoch) == 8)
        sync(epoch, value=2, num=8, inc=6)  # the shard goes on: a newer sync installs
        assert np.all(pull_at(addr, key, epoch) == 2)
    assert c.procs["shard-1"].alive()


def push_record(op, keys, lengths, values, n=None, flags=0, tail=b""):
    """A journal push record (ps/shard/journal.c): format, op, flags, optimizer kind,
    10 f32, u32 n, keys, lengths, then what `tail` adds (slots, names) and the values."""
    head = bytes([1, op, flags, 0]) + b"\0" * 40 + (len(keys) if n is None else n).to_bytes(4, "little")
    return (head + np.asarray(keys, "<u8").tobytes() + np.asarray(lengths, "<u4").tobytes() + tail
            + np.asarray(values, "<f4").tobytes())


def test_hostile_replicated_records_in_many_pieces(make_cluster):
    """Records large enough that gRPC hands them over in many slices (the backup walks
    them where they lie): a head claiming more keys than the record holds, slots that
    run past it, a rows record cut short, and a well-formed ADD of NaN onto a chunk the
    shard holds: each refused with a clear status, nothing applied, nothing non-finite
    served."""
    c = make_cluster(shards=1)
    addr = c.procs["shard-1"].addr
    with grpc.insecure_channel(addr, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        stub = pb_grpc.ParameterServerStub(ch)
        epoch = stub.Health(pb.HealthRequest(), timeout=5).epoch
        floats = 100_000  # 400 KB of values: many slices
        key = 77
        start = np.arange(floats, dtype="<f4")
        stub.Push(pb.PushRequest(epoch=epoch, keys=[key], lengths=[floats], values=start.tobytes()),
                  timeout=10)

        def refused(records, words, code=grpc.StatusCode.INVALID_ARGUMENT, count=1):
            with pytest.raises(grpc.RpcError) as e:
                stub.Replicate(pb.ReplicateRequest(**{"from": "x"}, incarnation=9, epoch=1,
                                                   first=1, count=count, records=records),
                               timeout=10)
            assert e.value.code() == code, e.value
            assert words in e.value.details(), e.value.details()

        add = 1  # PUSH_ADD
        junk = np.ones(floats, "<f4")
        refused(frame(1, push_record(add, [key], [floats], junk, n=1 << 30)), "cannot be applied")
        refused(frame(1, push_record(add, [key], [floats], junk, flags=16,
                                     tail=(0).to_bytes(4, "little"))[:-8]), "cannot be applied")
        rows = bytes([1, 1, 0, 0]) + b"\0" * 68 + (1 << 20).to_bytes(4, "little") + b"\1" * 300_000
        refused(frame(3, rows), "cannot be applied")
        nan = np.ones(floats, "<f4")
        nan[floats - 3] = np.nan  # late in the record: in one of its last slices
        refused(frame(1, push_record(add, [key], [floats], nan)), "cannot be applied")
        refused(frame(1, push_record(add, [key], [floats], nan)),  # the store's own reason
                f"push value {floats - 3} is NaN")
        got = stub.Pull(pb.PullRequest(epoch=epoch, keys=[key]), timeout=10)
        assert np.array_equal(np.frombuffer(got.values, "<f4"), start)  # nothing applied
        # a well-formed one goes through: the shard is fine
        stub.Replicate(pb.ReplicateRequest(**{"from": "x"}, incarnation=9, epoch=1, first=1,
                                           count=1,
                                           records=frame(1, push_record(add, [key], [floats],
                                                                        junk))),
                       timeout=10)
        got = stub.Pull(pb.PullRequest(epoch=epoch, keys=[key]), timeout=10)
        assert np.array_equal(np.frombuffer(got.values, "<f4"), start + 1)


def test_a_100k_key_push_retried_with_its_request_id_lands_once(make_cluster):
    """A huge push sent three times with one request id (a client retrying after lost
    answers) is applied once; a retry that carries only part of the keys (a regrouped
    retry) changes nothing either. (Backups remember request ids the same way: the
    records they get carry them.)"""
    c = make_cluster(shards=1)
    addr = c.procs["shard-1"].addr
    n = 100_000
    keys = list(range(5_000_000, 5_000_000 + n))
    with grpc.insecure_channel(addr, options=[("grpc.max_send_message_length", 64 << 20),
                                              ("grpc.max_receive_message_length", 64 << 20)]) as ch:
        stub = pb_grpc.ParameterServerStub(ch)
        epoch = c.ok("status")["epoch"]
        stub.Push(pb.PushRequest(epoch=epoch, keys=keys, lengths=[1] * n,
                                 values=np.zeros(n, "<f4").tobytes()), timeout=60)
        ones = np.ones(n, "<f4").tobytes()
        for _ in range(3):
            stub.Push(pb.PushRequest(epoch=epoch, keys=keys, lengths=[1] * n, op=pb.PUSH_ADD,
                                     values=ones, request_id=0xABCDEF), timeout=60)
        half = keys[::2]
        stub.Push(pb.PushRequest(epoch=epoch, keys=half, lengths=[1] * len(half),
                                 op=pb.PUSH_ADD, values=np.ones(len(half), "<f4").tobytes(),
                                 request_id=0xABCDEF), timeout=60)
        r = stub.Pull(pb.PullRequest(epoch=epoch, keys=keys[::101]), timeout=60)
        assert np.all(np.frombuffer(r.values, "<f4") == 1.0)


def test_a_retry_after_failover_to_a_backup_synced_with_images_applies_once(make_cluster,
                                                                             tmp_path):
    """A push applied on its primary but never replicated (its backup was down) reaches
    the restarted backup inside the sync's images; the primary then dies. The client's
    retry of that push (same request id) on the backup, now primary, must not apply it
    again: the sync carries the request ids of the changes its images hold."""
    c = make_cluster(shards=2, heartbeat_ms=2000)  # dead after seconds: time to restart
    upload_wide(c, tmp_path)
    epoch = ring_epoch(c)
    key, addrs = chunk_owners(c, "wide", "big")[0]
    name = {p.addr: n for n, p in c.procs.items()}
    primary, backup = name[addrs[0]], name[addrs[1]]
    n = len(pull_at(addrs[0], key, epoch))
    ones = np.ones(n, "<f4").tobytes()
    push = dict(keys=[key], lengths=[n], op=pb.PUSH_ADD, values=ones, request_id=0x5EED5EED)

    c.procs[backup].proc.kill()  # the backup goes down...
    c.procs[backup].proc.wait(timeout=10)
    with grpc.insecure_channel(addrs[0]) as ch:  # ...so the primary cannot acknowledge
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.ParameterServerStub(ch).Push(pb.PushRequest(epoch=epoch, **push), timeout=0.3)
    assert e.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    assert np.all(pull_at(addrs[0], key, epoch) == 1.0)  # but applied it
    c.start_shard(backup)  # back, empty, at a new address: synced with images
    c.wait_alive([backup])
    new_addr = c.procs[backup].addr
    wait_for("the backup synced", lambda: np.all(pull_at(new_addr, key, ring_epoch(c)) == 1.0))

    c.procs[primary].proc.kill()  # the primary dies: the backup takes its keys
    c.procs[primary].proc.wait(timeout=10)
    wait_for("the failover", lambda: not c.nodes()[primary]["in_ring"], timeout=60)
    epoch = ring_epoch(c)
    with grpc.insecure_channel(new_addr) as ch:
        stub = pb_grpc.ParameterServerStub(ch)
        stub.Push(pb.PushRequest(epoch=epoch, **push), timeout=10)  # the client's retry
        assert np.all(pull_at(new_addr, key, epoch) == 1.0), "the retry applied twice"
        push["request_id"] = 0x5EED5EEE  # a new push still applies
        stub.Push(pb.PushRequest(epoch=epoch, **push), timeout=10)
    assert np.all(pull_at(new_addr, key, epoch) == 2.0)


def test_a_retry_after_the_primary_died_in_the_middle_of_a_sync_applies_once(make_cluster,
                                                                             tmp_path):
    """As above, but the primary dies while the sync is under way (about 64 MiB of images
    in several batches; killed once the first images are in). Before, a backup installing
    an image forgot the request ids of its keys and learned them again only from records
    sent at the sync's end, which never came: every imaged key took the retry twice. Each
    batch now carries the records of its images' keys."""
    floats, chunk = 32 * 1024 * 1024, 4096
    config = dict(CONFIG, name="huge", outputs=[{"name": "y", "datatype": "FP32",
                                                 "shape": [-1, floats]}])
    c = make_cluster(shards=2, heartbeat_ms=5000)  # no failover before the backup is back (ASan, load)
    root = write_model(tmp_path / "huge", config, {"big": np.zeros((floats, 1), "<f4"),
                                                   "b": np.zeros(floats, "<f4")})
    c.ok("model", "upload", str(root), "--chunk-floats", str(chunk))
    epoch = ring_epoch(c)
    owners = chunk_owners(c, "huge", "big")
    name = {p.addr: n for n, p in c.procs.items()}
    first = owners[0][1][0]
    primary = name[first]
    backup = next(n for n in c.procs if n not in ("coordinator", primary))
    keys = [k for k, addrs in owners if addrs[0] == first]
    ones = np.ones(chunk, "<f4").tobytes()
    rid = 0x5EED0001

    def held(addr, key, epoch):
        try:
            return pull_at(addr, key, epoch)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    c.procs[backup].proc.kill()  # the backup goes down; the primary applies a push
    c.procs[backup].proc.wait(timeout=10)
    with grpc.insecure_channel(first, options=[("grpc.max_send_message_length", 64 << 20),
                                               ("grpc.max_receive_message_length", 64 << 20)]) as ch:
        stub = pb_grpc.ParameterServerStub(ch)

        def applied(part):
            got = stub.Pull(pb.PullRequest(epoch=epoch, keys=part), timeout=30)
            return np.all(np.frombuffer(got.values, "<f4") == 1.0)

        # one push in calls of 8 MiB, as a client cuts it. None is acknowledged (the backup
        # is down), and a call given up on (0.5 s) may not have reached the primary whole
        # under load: those are sent again, with the request id, until every part applied
        todo = [keys[at:at + 512] for at in range(0, len(keys), 512)]
        for _ in range(20):
            calls = [stub.Push.future(pb.PushRequest(epoch=epoch, keys=part,
                                                     lengths=[chunk] * len(part), op=pb.PUSH_ADD,
                                                     values=ones * len(part), request_id=rid),
                                      timeout=0.5) for part in todo]
            for f in calls:
                f.exception()
            todo = [part for part in todo if not applied(part)]
            if not todo:
                break
        assert not todo, f"{len(todo)} parts of the push never applied on the primary"
    sample = keys[:: max(1, len(keys) // 8)]
    c.start_shard(backup)  # back, empty: synced with images, batch after batch
    new_addr = c.procs[backup].addr
    deadline = time.monotonic() + 60
    while not any(held(new_addr, k, epoch) is not None for k in sample):
        assert time.monotonic() < deadline, "no image reached the restarted backup"
    c.procs[primary].proc.kill()  # dies in the middle of the sync
    c.procs[primary].proc.wait(timeout=10)
    wait_for("the failover", lambda: not c.nodes()[primary]["in_ring"], timeout=60)
    epoch = ring_epoch(c)
    imaged = [k for k in keys if held(new_addr, k, epoch) is not None]
    print(f"{len(imaged)} of {len(keys)} chunks were imaged when the primary died")
    assert 0 < len(imaged) < len(keys), "the primary did not die in the middle of the sync"
    twice = []
    with grpc.insecure_channel(new_addr) as ch:
        stub = pb_grpc.ParameterServerStub(ch)
        for k in imaged:  # the client's retry, key by key (the others are gone with it)
            stub.Push(pb.PushRequest(epoch=epoch, keys=[k], lengths=[chunk], op=pb.PUSH_ADD,
                                     values=ones, request_id=rid), timeout=10)
            if pull_at(new_addr, k, epoch)[0] != 1.0:
                twice.append(k)
    assert not twice, f"the retry applied twice on {len(twice)} of {len(imaged)} imaged chunks"


def wait_no_change(c, timeout=60):
    return wait_for("the ring change to finish", lambda: not c.ok("ring", "list").get("change"),
                    timeout=timeout)


def test_a_shard_drained_and_added_back_gets_every_change(make_cluster, tmp_path):
    """A shard drained off the ring, then added back as the same running process. Before,
    the primaries made their replication streams to it anew numbered from 1, and it
    took the new records for ones sent again (it kept the last number it applied per
    primary) and skipped them: its copies stayed behind the acknowledged ADDs, and a
    failover to it later served them."""
    c = make_cluster(shards=3)
    upload_wide(c, tmp_path)
    cl = psclient.Client(c.coordinator)
    acked = 0

    def adds(n):
        nonlocal acked
        for _ in range(n):
            cl.add("wide", "big", np.ones(FLOATS, np.float32), version=1)
            acked += 1
    try:
        adds(3)
        c.ok("ring", "drain", "--id", "shard-2")
        wait_no_change(c)
        adds(5)
        c.ok("ring", "add", "--id", "shard-2", "--addr", c.procs["shard-2"].addr)
        wait_no_change(c)
        adds(7)
    finally:
        cl.close()
    epoch = ring_epoch(c)
    chunks = chunk_owners(c, "wide", "big")
    assert any(any(a == c.procs["shard-2"].addr for a in addrs) for _, addrs in chunks)
    for key, addrs in chunks:
        for a in addrs:
            got = pull_at(a, key, epoch)
            assert np.all(got == acked), (key, a, acked, np.unique(got)[:4])


def test_a_joiner_killed_at_its_commit_and_restarted_at_once_loses_nothing(make_cluster,
                                                                            tmp_path):
    """R = 2, shards with --data-dir, ADDs all along. Each cycle: shard-1 is killed (-9)
    and taken off the ring, restarts on its data directory and port and is added back,
    and the moment its log says the join committed it is killed again and restarted at
    once (before the coordinator notices), so it is the primary of the keys it joined for
    while the old primaries' last changes are still on their way to it. Before, about
    three runs in four ended with an acknowledged ADD missing on both owners of some
    chunks, or applied twice: the restarted joiner's images set the old primary's copy
    back; a retry was answered from request-id memory that an image had made wrong; a
    push whose change the committed ring kept from the joiner was acknowledged; and a
    backup that restarted was sent again changes it had kept. A sync's images installed
    on a shard whose ring was a moment older or newer than its sender's set keys back
    (rarely: about one run in 70). Every owner is checked at the end of every cycle."""
    c = make_cluster(shards=3, data_dirs=True)
    floats = 8192  # 8 small chunks: many ADDs a second, some on their way at each commit
    config = dict(CONFIG, name="small", outputs=[{"name": "y", "datatype": "FP32",
                                                  "shape": [-1, floats]}])
    root = write_model(tmp_path / "small", config, {"big": np.zeros((floats, 1), "<f4"),
                                                    "b": np.zeros(floats, "<f4")})
    c.ok("model", "upload", str(root), "--chunk-floats", "1024")
    victim = "shard-1"
    port = c.procs[victim].port
    adder = Adder(c.coordinator, model="small", floats=floats, resume=True)
    adder.start()

    def ring_state():
        doc = c.ok("ring", "list")
        return next(s for s in doc["shards"] if s["id"] == victim), doc.get("change")

    def add_back():
        c.psctl("ring", "add", "--id", victim, "--addr", f"127.0.0.1:{port}", timeout=120)

    try:
        for cycle in range(8):
            c.procs[victim].stop(sig=signal.SIGKILL)
            wait_for("the failover", lambda: (lambda s, ch: not s["in_ring"] and not ch)(
                *ring_state()), timeout=60)
            c.start_shard(victim, port=port)
            c.wait_alive([victim])
            log = c.procs[victim].log_path
            start = log.stat().st_size
            adding = threading.Thread(target=add_back)
            adding.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with open(log, "rb") as f:
                    f.seek(start)
                    if b"shards; member" in f.read():
                        break
                time.sleep(0.0005)
            c.procs[victim].stop(sig=signal.SIGKILL)  # at its join's commit
            c.start_shard(victim, port=port)  # at once: still on the ring
            adding.join(timeout=120)

            def settled():
                s, change = ring_state()
                if s["in_ring"] and not change:
                    return True
                if not s["in_ring"] and not change and s["alive"]:  # failed over after all
                    add_back()
                return False
            wait_for("the ring to settle", settled, timeout=120)
            adder.pause()  # every owner of every chunk holds exactly what was acknowledged
            epoch = ring_epoch(c)
            for key, addrs in chunk_owners(c, "small", "big"):
                for a in addrs:
                    got = pull_at(a, key, epoch)
                    assert got.min() == got.max() == adder.acked, (
                        f"cycle {cycle}: chunk {key:016x} on {a}: {np.unique(got)[:4]}, "
                        f"acknowledged {adder.acked}")
            adder.unpause()
    finally:
        acked_then = adder.acked
        deadline = time.monotonic() + 30
        while adder.acked < acked_then + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        adder.stop()
    epoch = ring_epoch(c)
    # every ADD that raised was tried again with its request id until acknowledged: each
    # landed once, so every float is exactly the count (a last one given up on may count)
    low, high = adder.acked, adder.acked + adder.unresolved
    print(f"{adder.acked} ADDs acknowledged, {len(adder.failed)} tries failed and were "
          f"retried, {adder.unresolved} given up")
    for key, addrs in chunk_owners(c, "small", "big"):
        copies = [pull_at(a, key, epoch) for a in addrs]
        for a, got in zip(addrs, copies):
            assert got.min() >= low and got.max() <= high, (
                f"chunk {key:016x} on {a}: {np.unique(got)[:4]}, acknowledged {low}, "
                f"given up {high - low}")
        assert np.array_equal(copies[0], copies[1]), (key, [np.unique(x)[:3] for x in copies])


def lookup_push_record(op, keys, value, request_id, n=None):
    """A push record with a request id (flag 4) marked "look up" (flag 32: a copy sent on,
    or of a retried push: the backup applies only the keys its request did not apply)."""
    head = (bytes([1, op, 4 | 32, 0]) + b"\0" * 40 + (len(keys) if n is None else n).to_bytes(4, "little")
            + request_id.to_bytes(8, "little"))
    return (head + np.asarray(keys, "<u8").tobytes() + np.ones(len(keys), "<u4").tobytes()
            + np.full(len(keys), value, "<f4").tobytes())


def test_hostile_look_up_copies_and_routed_epochs(make_cluster):
    """The Replicate fields and records the join-commit fixes added, from a hostile caller:
    a routed_epoch of 2^64-1 or older than the shard's ring, 100k-key "look up" copies,
    a look-up record whose key count lies, and request-id records in a live stream. Each
    gets a clear status or applies exactly what it should (a look-up copy never applies a
    key its request applied before), and the shard keeps serving."""
    c = make_cluster(shards=1)
    addr = c.procs["shard-1"].addr
    n = 100_000
    keys = [(i + 1) * 0x9E3779B97F4A7C15 % (1 << 64) for i in range(n)]
    with grpc.insecure_channel(addr) as ch:
        stub = pb_grpc.ParameterServerStub(ch)
        epoch = stub.Health(pb.HealthRequest(), timeout=5).epoch
        base = {"from": "hostile", "incarnation": 11, "epoch": 1}

        def send(first, rec, **kw):
            return stub.Replicate(pb.ReplicateRequest(**base, first=first, count=1, records=rec,
                                                      **kw), timeout=30)

        assert send(1, frame(1, lookup_push_record(0, keys, 1.0, 9)),
                    routed_epoch=(1 << 64) - 1).applied == 1  # ASSIGN 1.0, request 9
        # request 9 again, as ADD: every key was applied by it here: nothing changes
        assert send(2, frame(1, lookup_push_record(1, keys, 5.0, 9)), routed_epoch=1).applied == 2
        # another request: applied; the shard is every key's primary, with no backup
        assert send(3, frame(1, lookup_push_record(1, keys[:10], 1.0, 10)),
                    routed_epoch=max(epoch - 1, 1)).applied == 3
        for k, want in ((keys[0], 2.0), (keys[5], 2.0), (keys[-1], 1.0)):
            assert np.all(pull_at(addr, k, epoch) == want), (k, want)
        with pytest.raises(grpc.RpcError) as e:  # a look-up record whose key count lies
            send(4, frame(1, lookup_push_record(1, keys[:4], 1.0, 11, n=1 << 30)), routed_epoch=1)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
        assert "cannot be applied" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:  # request ids come only with a sync's images
            dedup = bytes([1, 0, 0, 0]) + (1).to_bytes(4, "little") + (9).to_bytes(8, "little")
            send(4, frame(4, dedup + keys[0].to_bytes(8, "little")))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
        assert stub.Health(pb.HealthRequest(), timeout=5).keys == n
    assert c.procs["shard-1"].alive()
