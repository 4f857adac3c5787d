"""Hostile and broken clients of the training RPCs, against a real coordinator and
shard: row requests with too many ids, answers that would pass the message limit,
mismatched lengths and specs, huge names, optimizer pushes without an optimizer or with
a kind other than the table's, duplicate ids, and coordinator calls past their limits
(SetOptimizer fields, worker registrations, names). Every one gets a clear status; the
processes stay up and keep answering (stop_all checks they exit cleanly)."""
import struct

import grpc
import numpy as np
import pytest

from test_optimizer_push import shard  # noqa: F401 - the fixture
from test_shard_protocol import start, stop_all, wait_ring  # noqa: F401

import coordinator_pb2 as cpb  # noqa: E402
import ps_pb2 as pb  # noqa: E402


def spec(dim=4, opt=pb.OPT_ADAGRAD):
    return pb.TableSpec(dim=dim, init=pb.INIT_UNIFORM, init_scale=0.1, seed=1, optimizer=opt)


def code(fn, *args, **kw):
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kw)
    return e.value.code(), e.value.details()


def test_hostile_row_requests(shard):
    s, epoch = shard
    big = list(range(300_000))
    c, d = code(s.PullRows, pb.PullRowsRequest(epoch=epoch, model="m", table="t", spec=spec(),
                                               ids=big))
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "rows per request" in d, d
    # an answer that could not fit in a message: refused before anything is allocated
    c, d = code(s.PullRows, pb.PullRowsRequest(epoch=epoch, model="m", table="t",
                                               spec=spec(dim=4096), ids=list(range(5000))))
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "pull fewer rows" in d, d
    for bad_spec, needle in ((spec(dim=0), "dim"), (spec(dim=5000), "dim"),
                             (pb.TableSpec(dim=4, init=7), "init"),
                             (pb.TableSpec(dim=4, init_scale=float("nan")), "scale"),
                             (pb.TableSpec(dim=4, optimizer=9), "optimizer")):
        c, d = code(s.PullRows, pb.PullRowsRequest(epoch=epoch, model="m", table="t",
                                                   spec=bad_spec, ids=[1]))
        assert c == grpc.StatusCode.INVALID_ARGUMENT and needle in d, (bad_spec, d)
    c, d = code(s.PullRows, pb.PullRowsRequest(epoch=epoch, model="m" * 5000, table="t",
                                               spec=spec(), ids=[1]))
    assert c == grpc.StatusCode.INVALID_ARGUMENT, d
    c, d = code(s.PullRows, pb.PullRowsRequest(epoch=epoch, model="", table="t", spec=spec(),
                                               ids=[1]))
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "name a model" in d, d
    # the table now exists with this spec: another spec is refused
    s.PullRows(pb.PullRowsRequest(epoch=epoch, model="m", table="t", spec=spec(), ids=[1, 2]))
    c, d = code(s.PullRows, pb.PullRowsRequest(epoch=epoch, model="m", table="t",
                                               spec=spec(dim=8), ids=[1]))
    assert c == grpc.StatusCode.FAILED_PRECONDITION, d
    g = np.ones((2, 4), np.float32).tobytes()
    opt = pb.OptimizerSpec(kind=pb.OPT_ADAGRAD, lr=0.1, eps=1e-10)
    bad = [
        (pb.PushRowsRequest(epoch=epoch, model="m", table="t", spec=spec(), op=pb.PUSH_OPTIMIZE,
                            ids=[1, 2], values=g), "must carry its optimizer"),
        (pb.PushRowsRequest(epoch=epoch, model="m", table="t", spec=spec(), op=pb.PUSH_OPTIMIZE,
                            optimizer=pb.OptimizerSpec(kind=pb.OPT_SGD, lr=0.1), ids=[1, 2],
                            values=g), "sgd"),
        (pb.PushRowsRequest(epoch=epoch, model="m", table="t", spec=spec(), op=pb.PUSH_OPTIMIZE,
                            optimizer=opt, ids=[1, 1], values=g), "more than once"),
        (pb.PushRowsRequest(epoch=epoch, model="m", table="t", spec=spec(), op=pb.PUSH_OPTIMIZE,
                            optimizer=opt, ids=[1, 2], values=g[:20]), "bytes"),
        (pb.PushRowsRequest(epoch=epoch, model="m", table="t", spec=spec(), op=7, ids=[1],
                            values=g[:16]), "unknown push op"),
        (pb.PushRowsRequest(epoch=epoch, model="m", table="t", spec=spec(), op=pb.PUSH_ADD,
                            ids=[1], values=struct.pack("<4f", 1, float("nan"), 0, 0)), "NaN"),
        (pb.PushRowsRequest(epoch=epoch, model="m", table="t", spec=spec(), op=pb.PUSH_ADD,
                            ids=big, values=b""), "rows per request"),
    ]
    before = np.frombuffer(s.PullRows(pb.PullRowsRequest(epoch=epoch, model="m", table="t",
                                                         spec=spec(), ids=[1, 2])).values,
                           np.float32).copy()
    for req, needle in bad:
        c, d = code(s.PushRows, req)
        assert c == grpc.StatusCode.INVALID_ARGUMENT and needle in d, (needle, c, d)
    after = np.frombuffer(s.PullRows(pb.PullRowsRequest(epoch=epoch, model="m", table="t",
                                                        spec=spec(), ids=[1, 2])).values,
                          np.float32)
    assert np.array_equal(before, after)  # nothing of a refused push applied
    assert s.Health(pb.HealthRequest()).id == "shard-1"  # still answering


def test_large_row_pushes_with_bad_values_late(shard):
    """Row pushes large enough to arrive in many slices, whose values the shard reads
    where they lie: a NaN or an infinity near the end is still found and named (nothing
    applied), skip_non_finite skips exactly those rows, a clean ADD lands whole, and one
    whose sum would overflow in its last row is refused whole."""
    s, epoch = shard
    n, dim = 200_000, 4  # 3.2 MB of values
    ids = list(range(10_000_000, 10_000_000 + n))
    tspec = spec()

    def pull():
        r = s.PullRows(pb.PullRowsRequest(epoch=epoch, model="late", table="t", spec=tspec,
                                          ids=ids), timeout=30)
        return np.frombuffer(r.values, np.float32).reshape(n, dim).copy()

    before = pull()
    g = np.full((n, dim), 0.5, np.float32)
    g[n - 3, 1] = np.nan
    g[n - 1, 3] = np.inf
    opt = pb.OptimizerSpec(kind=pb.OPT_ADAGRAD, lr=0.1, eps=1e-10)
    push = dict(epoch=epoch, model="late", table="t", spec=tspec, ids=ids, values=g.tobytes())
    c, d = code(s.PushRows, pb.PushRowsRequest(op=pb.PUSH_OPTIMIZE, optimizer=opt, **push),
                timeout=30)
    assert c == grpc.StatusCode.INVALID_ARGUMENT and f"row index {n - 3}" in d, d
    c, d = code(s.PushRows, pb.PushRowsRequest(op=pb.PUSH_ADD, **push), timeout=30)
    assert c == grpc.StatusCode.INVALID_ARGUMENT and f"row index {n - 3}" in d, d
    assert np.array_equal(pull(), before)  # nothing applied
    r = s.PushRows(pb.PushRowsRequest(op=pb.PUSH_OPTIMIZE, optimizer=opt, skip_non_finite=True,
                                      **push), timeout=30)
    assert r.skipped == 2, r
    after = pull()
    bad = [n - 3, n - 1]
    assert np.array_equal(after[bad], before[bad])  # the skipped rows did not move
    moved = np.delete(after - before, bad, axis=0)
    assert np.all(moved < 0), "every other row took its step against the gradient"
    s.PushRows(pb.PushRowsRequest(op=pb.PUSH_ADD, **dict(push, values=np.ones(
        (n, dim), np.float32).tobytes())), timeout=30)
    assert np.allclose(pull(), after + 1.0)
    # an ADD whose sum overflows in its last row: refused whole, nothing served non-finite
    huge = np.zeros((n, dim), np.float32)
    huge[n - 1, 2] = 3e38
    s.PushRows(pb.PushRowsRequest(op=pb.PUSH_ADD, **dict(push, values=huge.tobytes())), timeout=30)
    held = pull()
    c, d = code(s.PushRows, pb.PushRowsRequest(op=pb.PUSH_ADD, **dict(push, values=huge.tobytes())),
                timeout=30)
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "would not be finite" in d, d
    assert np.array_equal(pull(), held) and np.all(np.isfinite(held))


def test_hostile_coordinator_calls(tmp_path):
    from conftest import BUILD
    import coordinator_pb2_grpc as cpb_grpc
    procs = []
    try:
        p, addr = start(tmp_path, "coord", [BUILD / "ps" / "ps-coordinator", "--listen",
                                            "127.0.0.1:0", "--state-dir", tmp_path / "st"])
        procs.append(("coord", p))
        c = cpb_grpc.CoordinatorStub(grpc.insecure_channel(addr))
        r = code(c.SetOptimizer, cpb.SetOptimizerRequest(model="m", fields=["lr"] * 17,
                                                         values=[0.1] * 17))
        assert r[0] == grpc.StatusCode.INVALID_ARGUMENT and "1 to 16" in r[1], r
        r = code(c.SetOptimizer, cpb.SetOptimizerRequest(model="m", fields=["lr"], values=[]))
        assert r[0] == grpc.StatusCode.INVALID_ARGUMENT, r
        r = code(c.SetOptimizer, cpb.SetOptimizerRequest(model="m", fields=["lr"], values=[1]))
        assert r[0] == grpc.StatusCode.NOT_FOUND, r
        r = code(c.RegisterWorker, cpb.RegisterWorkerRequest(model="x" * 100000, name="y" * 100000))
        assert r[0] == grpc.StatusCode.NOT_FOUND, r
        r = code(c.Clock, cpb.ClockRequest(model="x" * 100000, worker_id=1, clock=2))
        assert r[0] == grpc.StatusCode.NOT_FOUND, r
        r = code(c.Prepared, cpb.PreparedRequest(node_id="n" * 100000, model="m", publish=1))
        assert r[0] == grpc.StatusCode.NOT_FOUND, r
        r = code(lambda: list(c.Publish(cpb.PublishRequest(model="m"), timeout=5)))
        assert r[0] == grpc.StatusCode.NOT_FOUND, r
        assert c.GetRing(cpb.GetRingRequest()).epoch >= 0  # still answering
    finally:
        stop_all(tmp_path, procs)
