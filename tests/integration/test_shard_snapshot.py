"""Snapshots of a shard's data directory (issue 8 item 1): a shard with
--snapshot-log-mb 1 takes snapshots while a stream of ADD pushes, Adam pushes and sparse
row pushes goes on; killed with -9 mid-stream and restarted, it holds every acknowledged
push (ADD sums between the acknowledged and the sent; optimizer steps exactly as a
reference computes them for the steps it holds), its log on disk stays bounded (old
segments are gone), and Health and psctl status show the same keys, bytes and rows.
A corrupt snapshot stops the start with a message naming the file; a clean shutdown
leaves a snapshot that covers the whole log."""
import signal
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest

from conftest import BUILD, run_psctl
from optim_ref import hyper, step
from test_shard_durability import Shard, f32, pull
from test_shard_protocol import log_text, start_coordinator, stop_all, wait_ring

import coordinator_pb2_grpc as cpb_grpc  # noqa: E402
import ps_pb2 as pb  # noqa: E402

BIG = 64 * 1024  # floats of the ADD key: 256 KiB a push, so the log grows fast
ADAM_LEN = 512
ADAM = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8)
ROW_SPEC = pb.TableSpec(dim=8, init=pb.INIT_ZEROS, seed=1, optimizer=pb.OPT_NONE)
ADAM_ROWS = pb.TableSpec(dim=4, init=pb.INIT_UNIFORM, init_scale=0.1, seed=7,
                         optimizer=pb.OPT_ADAM)
ROW_IDS = list(range(100))
ADAM_IDS = [5, 17, 2**40]


def grad(k, n):
    """The gradient of the k-th Adam push (deterministic)."""
    return (np.sin(np.arange(n) * 0.37 + k) * 0.5).astype(np.float32)


def adam_reference(w0, steps, n):
    w, state, h = np.asarray(w0, np.float64), None, hyper("adam", **ADAM)
    for k in range(steps):
        w, state = step("adam", w, grad(k, n), state, k + 1, h)
    return w, state


class Stream:
    """A pusher thread counting what it sent and what was acknowledged."""

    def __init__(self, push):
        self.push, self.sent, self.acked = push, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            self.sent += 1
            try:
                self.push(self.acked)
                self.acked += 1
            except grpc.RpcError:
                return

    def end(self):
        self.stop.set()
        self.thread.join(20)


def shard_dir_sizes(data):
    wal = sum(p.stat().st_size for p in data.glob("wal-*.log"))
    return wal, sorted(p.name for p in data.glob("snap-*.snap"))


def poll(cond, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def health(s):
    h = s.stub.Health(pb.HealthRequest())
    return h.keys, h.bytes, [(t.model, t.table, t.rows, t.bytes) for t in h.tables]


def psctl_keys(coord):
    doc = run_psctl("status", coordinator=coord).doc
    return next(n["keys"] for n in doc["nodes"] if n["id"] == "shard-1")


def test_snapshots_under_a_push_stream_survive_kill_9(tmp_path):
    p, coord = start_coordinator(tmp_path)
    s = Shard(tmp_path, coord, "--snapshot-log-mb", "1")
    try:
        epoch = wait_ring(cpb_grpc.CoordinatorStub(grpc.insecure_channel(coord)), ["shard-1"])
        st = s.stub
        base = list(range(1000, 1064))  # 4 MiB that every snapshot holds
        st.Push(pb.PushRequest(epoch=epoch, keys=base, lengths=[16384] * 64,
                               values=np.repeat(np.arange(64, dtype=np.float32), 16384).tobytes()))
        w0 = np.linspace(-1, 1, ADAM_LEN, dtype=np.float32)
        st.Push(pb.PushRequest(epoch=epoch, keys=[8, 9], lengths=[ADAM_LEN, BIG],
                               values=w0.tobytes() + bytes(4 * BIG)))
        opt = pb.OptimizerSpec(kind=pb.OPT_ADAM, **ADAM)
        rows = dict(epoch=epoch, model="m", table="counts", spec=ROW_SPEC)
        arows = dict(epoch=epoch, model="m", table="adam", spec=ADAM_ROWS)
        w_rows0 = np.frombuffer(st.PullRows(pb.PullRowsRequest(**arows, ids=ADAM_IDS)).values,
                                np.float32).reshape(len(ADAM_IDS), 4)
        ones = np.ones(BIG, np.float32).tobytes()
        streams = [
            Stream(lambda k: st.Push(pb.PushRequest(epoch=epoch, keys=[9], lengths=[BIG],
                                                    op=pb.PUSH_ADD, values=ones), timeout=10)),
            Stream(lambda k: st.Push(pb.PushRequest(epoch=epoch, keys=[8], lengths=[ADAM_LEN],
                                                    op=pb.PUSH_OPTIMIZE, optimizer=opt,
                                                    values=grad(k, ADAM_LEN).tobytes()),
                                     timeout=10)),
            Stream(lambda k: st.PushRows(pb.PushRowsRequest(**rows, op=pb.PUSH_ADD, ids=ROW_IDS,
                                                            values=f32(*[1.0] * 800)),
                                         timeout=10)),
            Stream(lambda k: st.PushRows(pb.PushRowsRequest(**arows, op=pb.PUSH_OPTIMIZE,
                                                            optimizer=opt, ids=ADAM_IDS,
                                                            values=grad(k, 12).tobytes()),
                                         timeout=10)),
        ]
        poll(lambda: all(x.acked > 0 for x in streams), "a push of every kind")
        before = health(s)
        base_versions = list(st_versions(s, epoch, base))
        poll(lambda: log_text(tmp_path, "shard-1").count("snapshot ") >= 4
             and streams[0].acked > 40, "snapshots under the stream")
        v_before = st.Pull(pb.PullRequest(epoch=epoch, keys=[8, 9])).seq
        s.kill()  # in the middle of the stream (and maybe of a snapshot)
        for x in streams:
            x.end()
        sent_mib = streams[0].sent / 4
        wal_bytes, snaps = shard_dir_sizes(s.data)
        assert len(snaps) == 1, snaps  # older snapshots go once a newer one is durable
        assert wal_bytes < 6 << 20 and sent_mib > 10, (wal_bytes, sent_mib)  # segments go

        s.start()
        text = log_text(tmp_path, f"shard-{s.runs}")
        assert "loaded snapshot" in text and snaps[0] in text, text[-2000:]
        v = pull(s, epoch, 9)[1]
        a = streams[0]
        assert a.acked <= v[0] <= a.sent and np.all(v == v[0]), (a.acked, v[0], a.sent)
        r, w = pull(s, epoch, 8, with_state=True)
        k = r.state_steps[0]
        assert streams[1].acked <= k <= streams[1].sent, (streams[1].acked, k)
        ref_w, ref_state = adam_reference(w0, k, ADAM_LEN)
        assert np.allclose(w, ref_w, rtol=1e-4, atol=1e-5)
        state = np.frombuffer(r.state, np.float32)
        assert np.allclose(state, np.concatenate(ref_state), rtol=1e-4, atol=1e-6)
        counts = np.frombuffer(st_rows(s, rows, ROW_IDS).values, np.float32)
        c = streams[2]
        assert c.acked <= counts[0] <= c.sent and np.all(counts == counts[0]), (c.acked, counts[0])
        got = s.stub.PullRows(pb.PullRowsRequest(**arows, ids=ADAM_IDS, with_state=True))
        k = got.state_steps[0]
        assert streams[3].acked <= k <= streams[3].sent and set(got.state_steps) == {k}
        ref_rows, _ = adam_reference(w_rows0.reshape(-1), k, 12)
        assert np.allclose(np.frombuffer(got.values, np.float32), ref_rows, rtol=1e-4, atol=1e-5)
        assert health(s) == before  # the same keys, bytes and rows
        poll(lambda: psctl_keys(coord) == before[0], "psctl status to show the same keys", 20)
        # the base came from the snapshot with its versions; new ones pass every old one
        assert list(st_versions(s, epoch, base)) == base_versions
        r = s.stub.Push(pb.PushRequest(epoch=epoch, keys=[9], lengths=[BIG], op=pb.PUSH_ADD,
                                       values=ones))
        assert r.versions[0] > v_before
    finally:
        stop_all(tmp_path, [("coord", p), (f"shard-{s.runs}", s.proc)])


def st_rows(s, rows, ids):
    return s.stub.PullRows(pb.PullRowsRequest(**rows, ids=ids))


def st_versions(s, epoch, keys):
    return s.stub.Pull(pb.PullRequest(epoch=epoch, keys=keys)).versions


def test_clean_shutdown_snapshots_and_a_corrupt_snapshot_refuses_the_start(tmp_path):
    p, coord = start_coordinator(tmp_path)
    s = Shard(tmp_path, coord, "--snapshot-log-mb", "64")
    try:
        epoch = wait_ring(cpb_grpc.CoordinatorStub(grpc.insecure_channel(coord)), ["shard-1"])
        s.stub.Push(pb.PushRequest(epoch=epoch, keys=[1, 2], lengths=[3, 1],
                                   values=f32(1, 2, 3, 4), names=["m/a#0", "m/b#0"]))
        s.stub.PushRows(pb.PushRowsRequest(epoch=epoch, model="m", table="t", spec=ROW_SPEC,
                                           op=pb.PUSH_ASSIGN, ids=[3], values=f32(*range(8))))
        s.proc.send_signal(signal.SIGTERM)  # a clean shutdown takes a last snapshot
        assert s.proc.wait(timeout=30) == 0
        _, snaps = shard_dir_sizes(s.data)
        assert len(snaps) == 1, snaps
        s.start()
        text = log_text(tmp_path, f"shard-{s.runs}")
        assert "loaded snapshot" in text and "replayed 0 records" in text, text[-2000:]
        assert list(pull(s, epoch, 1)[1]) == [1, 2, 3]
        s.kill()

        snap = s.data / snaps[0]
        data = bytearray(snap.read_bytes())
        data[len(data) // 2] ^= 0xFF  # inside a record
        snap.write_bytes(bytes(data))
        s.runs += 1
        name = f"shard-{s.runs}"
        with open(tmp_path / f"{name}.log", "a") as log:
            r = subprocess.run([str(BUILD / "ps" / "ps-shard"), "--id", "shard-1",
                                "--coordinator", coord, "--data-dir", str(s.data)],
                               stdout=log, stderr=subprocess.STDOUT, timeout=30)
        assert r.returncode != 0
        text = log_text(tmp_path, name)
        assert "cannot recover" in text and snap.name in text, text[-2000:]
        data[len(data) // 2] ^= 0xFF  # mended: it starts again, with everything
        snap.write_bytes(bytes(data))
        s.start()
        assert list(pull(s, epoch, 2)[1]) == [4]
        rows = s.stub.PullRows(pb.PullRowsRequest(epoch=epoch, model="m", table="t",
                                                  spec=ROW_SPEC, ids=[3]))
        assert list(np.frombuffer(rows.values, np.float32)) == list(range(8))
    finally:
        stop_all(tmp_path, [("coord", p), (f"shard-{s.runs}", s.proc)])


@pytest.mark.parametrize("stop", ["kill", "term"])
def test_a_retry_after_a_restart_is_not_applied_twice_once_a_snapshot_holds_it(tmp_path, stop):
    """A client whose answer to an ADD was lost sends it again, with its request id, after
    the shard restarted. Before, a snapshot held no request ids: once it covered the ADD's
    log record (a background snapshot that let go of the segment, or the snapshot of a
    clean shutdown), the restarted shard had forgotten the request and applied the retry
    a second time."""
    p, coord = start_coordinator(tmp_path)
    s = Shard(tmp_path, coord, "--snapshot-log-mb", "1")
    try:
        epoch = wait_ring(cpb_grpc.CoordinatorStub(grpc.insecure_channel(coord)), ["shard-1"])
        s.stub.Push(pb.PushRequest(epoch=epoch, keys=[42], lengths=[1], values=f32(0)))
        add = dict(epoch=epoch, keys=[42], lengths=[1], op=pb.PUSH_ADD, values=f32(1),
                   request_id=0xD0D0CAFE)
        s.stub.Push(pb.PushRequest(first_try=True, **add))  # applied; say its answer is lost
        first = sorted(s.data.glob("wal-*.log"))[0]  # the segment holding the ADD
        big = np.zeros(100_000, np.float32).tobytes()
        for i in range(6):  # 2.4 MB of log after it: that segment is not the last
            s.stub.Push(pb.PushRequest(epoch=epoch, keys=[1000 + i], lengths=[100_000],
                                       values=big))
        if stop == "kill":  # a background snapshot lets go of it
            poll(lambda: not first.exists(), "the first log segment to be dropped")
            s.kill()
        else:  # the snapshot of a clean shutdown does
            s.proc.send_signal(signal.SIGTERM)
            assert s.proc.wait(timeout=30) == 0
            assert not first.exists()
        s.start()
        s.stub.Push(pb.PushRequest(first_try=False, **add), timeout=30)  # the retry
        assert list(pull(s, epoch, 42)[1]) == [1.0]
    finally:
        stop_all(tmp_path, [("coord", p), (f"shard-{s.runs}", s.proc)])
