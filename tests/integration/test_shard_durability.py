"""A shard with --data-dir loses no acknowledged update (issue 8 item 1, first step):
pushes (ASSIGN, ADD, optimizer steps with their state) and deletes survive a kill -9
and a restart from the write-ahead log; under a stream of ADDs killed mid-way, the value
after the restart is at least every acknowledged push and at most every one sent;
versions after the restart are newer than any before; a torn tail is cut and logged;
corruption inside the log stops the shard with a message naming the file."""
import pathlib
import signal
import struct
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest

from test_shard_protocol import (log_text, shard_stub, start, start_coordinator, stop_all,
                                 wait_ring)
from conftest import BUILD

import coordinator_pb2_grpc as cpb_grpc  # noqa: E402
import ps_pb2 as pb  # noqa: E402


def f32(*v):
    return struct.pack(f"<{len(v)}f", *v)


class Shard:
    """shard-1 with a data directory; restartable."""

    def __init__(self, tmp, coord, *flags):
        self.tmp, self.coord, self.flags = tmp, coord, flags
        self.data = tmp / "data"
        self.runs = 0
        self.start()

    def start(self):
        self.runs += 1
        self.proc, self.addr = start(self.tmp, f"shard-{self.runs}",
                                     [BUILD / "ps" / "ps-shard", "--id", "shard-1",
                                      "--coordinator", self.coord, "--data-dir", self.data,
                                      *self.flags])
        self.stub = shard_stub(self.addr)
        return self

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path):
    procs = []
    p, coord = start_coordinator(tmp_path)
    procs.append(("coord", p))
    s = Shard(tmp_path, coord)
    c = cpb_grpc.CoordinatorStub(grpc.insecure_channel(coord))
    epoch = wait_ring(c, ["shard-1"])
    yield s, epoch, c
    procs.append((f"shard-{s.runs}", s.proc))
    stop_all(tmp_path, procs)


def pull(s, epoch, key, with_state=False):
    r = s.stub.Pull(pb.PullRequest(epoch=epoch, keys=[key], with_state=with_state))
    return r, np.frombuffer(r.values, np.float32)


def test_acknowledged_updates_survive_kill_9(cluster):
    s, epoch, _ = cluster
    st = s.stub
    st.Push(pb.PushRequest(epoch=epoch, keys=[1, 2, 3], lengths=[2, 2, 1],
                           values=f32(0, 0, 1, 1, 7), names=["m/a#0", "m/b#0", "m/c#0"]))
    for _ in range(20):
        st.Push(pb.PushRequest(epoch=epoch, keys=[1], lengths=[2], op=pb.PUSH_ADD,
                               values=f32(1.5, -1)))
    opt = pb.OptimizerSpec(kind=pb.OPT_ADAM, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    for g in (0.5, -0.25, 1.0):
        st.Push(pb.PushRequest(epoch=epoch, keys=[2], lengths=[2], op=pb.PUSH_OPTIMIZE,
                               optimizer=opt, values=f32(g, g)))
    st.Delete(pb.DeleteRequest(epoch=epoch, keys=[3]))
    before_b, b = pull(s, epoch, 2, with_state=True)
    v_before = max(st.Pull(pb.PullRequest(epoch=epoch, keys=[1, 2])).versions)
    s.kill()
    s.start()
    _, a = pull(s, epoch, 1)
    assert np.allclose(a, [30.0, -20.0]), a
    after_b, b2 = pull(s, epoch, 2, with_state=True)
    assert np.array_equal(b2, b)  # the same optimizer steps, replayed exactly
    assert after_b.state == before_b.state and list(after_b.state_steps) == [3]
    with pytest.raises(grpc.RpcError) as e:
        pull(s, epoch, 3)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND  # the delete was kept too
    r = s.stub.Pull(pb.PullRequest(epoch=epoch, keys=[1, 2]))
    assert min(r.versions) > v_before  # versions never go backwards
    assert "replayed" in log_text(s.tmp, f"shard-{s.runs}")


def test_a_100k_key_push_survives_kill_9(cluster):
    s, epoch, _ = cluster
    n = 100_000
    keys = list(range(1_000_000, 1_000_000 + n))
    s.stub.Push(pb.PushRequest(epoch=epoch, keys=keys, lengths=[1] * n,
                               values=np.arange(n, dtype=np.float32).tobytes()), timeout=60)
    s.kill()
    s.start()
    assert s.stub.Health(pb.HealthRequest()).keys >= n
    r = s.stub.Pull(pb.PullRequest(epoch=epoch, keys=keys[::997]), timeout=60)
    assert np.array_equal(np.frombuffer(r.values, np.float32),
                          np.arange(n, dtype=np.float32)[::997])


def test_sparse_rows_survive_kill_9(cluster):
    s, epoch, _ = cluster
    spec = pb.TableSpec(dim=4, init=pb.INIT_NORMAL, init_scale=0.1, seed=5,
                        optimizer=pb.OPT_ADAGRAD)
    opt = pb.OptimizerSpec(kind=pb.OPT_ADAGRAD, lr=0.1, eps=1e-10)
    ids = [3, 11, 2**40]
    base = dict(epoch=epoch, model="m", table="emb", spec=spec)
    s.stub.PushRows(pb.PushRowsRequest(**base, op=pb.PUSH_ASSIGN, ids=[11],
                                       values=f32(1, 2, 3, 4)))
    for k in range(3):
        s.stub.PushRows(pb.PushRowsRequest(**base, op=pb.PUSH_OPTIMIZE, optimizer=opt, ids=ids,
                                           values=f32(*([0.5 * (k + 1)] * 12))))
    before = s.stub.PullRows(pb.PullRowsRequest(**base, ids=ids + [77], with_state=True))
    s.kill()
    s.start()
    after = s.stub.PullRows(pb.PullRowsRequest(**base, ids=ids + [77], with_state=True))
    assert after.values == before.values  # pushed rows replayed; row 77 made the same again
    assert after.state == before.state and list(after.state_steps) == list(before.state_steps)
    assert list(after.state_steps) == [3, 3, 3, 0]


def test_a_stream_of_adds_killed_midway(cluster):
    s, epoch, _ = cluster
    s.stub.Push(pb.PushRequest(epoch=epoch, keys=[9], lengths=[1], values=f32(0)))
    acked, sent, stop = [0], [0], threading.Event()

    def pusher():
        stub = s.stub
        while not stop.is_set():
            sent[0] += 1
            try:
                stub.Push(pb.PushRequest(epoch=epoch, keys=[9], lengths=[1], op=pb.PUSH_ADD,
                                         values=f32(1)), timeout=5)
                acked[0] += 1
            except grpc.RpcError:
                return

    t = threading.Thread(target=pusher)
    t.start()
    time.sleep(0.8)
    s.kill()  # in the middle of the stream
    stop.set()
    t.join(10)
    s.start()
    _, v = pull(s, epoch, 9)
    assert acked[0] > 10, acked
    assert acked[0] <= v[0] <= sent[0], (acked, v, sent)  # nothing acknowledged is lost


def test_torn_tail_is_cut_and_corruption_refused(cluster):
    s, epoch, _ = cluster
    for i in range(5):
        s.stub.Push(pb.PushRequest(epoch=epoch, keys=[20 + i], lengths=[1], values=f32(i)))
    s.kill()
    seg = sorted(pathlib.Path(s.data).glob("wal-*.log"))[-1]
    with open(seg, "ab") as f:
        f.write(b"\x01\x02\x03 torn record")  # a write that never completed
    s.start()
    text = log_text(s.tmp, f"shard-{s.runs}")
    assert "torn tail" in text and "a write never acknowledged" in text, text  # fsync group
    for i in range(5):
        assert pull(s, epoch, 20 + i)[1][0] == i
    s.kill()
    data = bytearray(seg.read_bytes())
    data[40] ^= 0xFF  # inside the first record, with good records after it
    seg.write_bytes(bytes(data))
    s.runs += 1
    name = f"shard-{s.runs}"
    log = open(s.tmp / f"{name}.log", "a")
    p = subprocess.run([str(BUILD / "ps" / "ps-shard"), "--id", "shard-1", "--coordinator",
                        s.coord, "--data-dir", str(s.data)], stdout=log, stderr=subprocess.STDOUT,
                       timeout=30)
    assert p.returncode != 0
    text = log_text(s.tmp, name)
    assert "cannot recover the write-ahead log" in text and seg.name in text, text[-2000:]
    # leave a clean shard for the fixture's teardown
    data[40] ^= 0xFF
    seg.write_bytes(bytes(data))
    s.start()
