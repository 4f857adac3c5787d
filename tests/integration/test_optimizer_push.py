"""Server-side optimizers on dense chunks (PUSH_OPTIMIZE), driven with grpcio against a
real coordinator and shard: every optimizer against the numpy reference of
optim_ref.py over several steps, the state beside the weights (pulled with_state for
checkpoints, never in the update stream, which carries the new weights as an ASSIGN),
and the bad input a training client may send: no optimizer, bad hyper-parameters, a
chunk that is absent or has another optimizer's state, non-finite gradients (refused,
or skipped and counted), and a step that would overflow (nothing changes)."""
import struct
import tempfile

import grpc
import numpy as np
import pytest

import optim_ref
from test_shard_protocol import shard_stub, start_coordinator, start_shard, stop_all, wait_ring

import coordinator_pb2_grpc as cpb_grpc  # noqa: E402
import ps_pb2 as pb  # noqa: E402


@pytest.fixture(scope="module")
def shard():
    """One coordinator and one shard (which owns every key)."""
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        p, coord = start_coordinator(tmp)
        procs.append(("coord", p))
        p, addr = start_shard(tmp, coord, "shard-1")
        procs.append(("shard-1", p))
        c = cpb_grpc.CoordinatorStub(grpc.insecure_channel(coord))
        epoch = wait_ring(c, ["shard-1"])
        yield shard_stub(addr), epoch
        stop_all(tmp, procs)


def f32(a):
    return np.asarray(a, np.float32).tobytes()


def spec(kind, **h):
    return pb.OptimizerSpec(kind=optim_ref.KINDS[kind], **optim_ref.hyper(kind, **h))


def assign(s, epoch, key, w):
    s.Push(pb.PushRequest(epoch=epoch, keys=[key], lengths=[len(w)], values=f32(w)))


def optimize(s, epoch, keys, grads, opt, skip=False):
    return s.Push(pb.PushRequest(epoch=epoch, keys=keys, lengths=[len(g) for g in grads],
                                 op=pb.PUSH_OPTIMIZE, optimizer=opt, skip_non_finite=skip,
                                 values=b"".join(f32(g) for g in grads)))


def pull(s, epoch, key, with_state=False):
    r = s.Pull(pb.PullRequest(epoch=epoch, keys=[key], with_state=with_state))
    return r, np.frombuffer(r.values, np.float32)


def expect_error(code, needle, fn, *args, **kw):
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kw)
    assert e.value.code() == code, e.value
    assert needle in e.value.details(), e.value.details()


CASES = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    ("adagrad", {"lr": 0.1, "initial_accumulator": 0.1, "weight_decay": 0.001}),
    ("adam", {"lr": 0.01, "weight_decay": 0.01}),
    ("adam", {"lr": 0.002, "beta1": 0.5, "beta2": 0.9, "eps": 1e-6}),
    ("ftrl", {"lr": 0.1, "l1": 0.05, "l2": 0.01, "beta": 1.0}),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_optimizer_matches_numpy(shard, case):
    s, epoch = shard
    kind, h = CASES[case]
    rng = np.random.default_rng(100 + case)
    key = 0x5100 + case
    n = 1003  # odd: the vector loops' tails count
    w = rng.normal(size=n).astype(np.float32)
    assign(s, epoch, key, w)
    ref_w, ref_state = w.astype(np.float64), None
    for t in range(1, 5):
        g = rng.normal(size=n).astype(np.float32)
        r = optimize(s, epoch, [key], [g], spec(kind, **h))
        assert r.versions[0] > 0 and r.skipped == 0
        ref_w, ref_state = optim_ref.step(kind, ref_w, g, ref_state, t, optim_ref.hyper(kind, **h))
        resp, got = pull(s, epoch, key, with_state=True)
        np.testing.assert_allclose(got, ref_w, rtol=2e-4, atol=2e-5, err_msg=f"{kind} step {t}")
        # the state, beside the weights: slot after slot, as train_spec.h says
        assert resp.state_kinds == [optim_ref.KINDS[kind]] and resp.state_steps == [t]
        assert resp.state_lengths == [n * len(ref_state)]
        state = np.frombuffer(resp.state, np.float32).reshape(len(ref_state), n)
        for k, want in enumerate(ref_state):
            np.testing.assert_allclose(state[k], want, rtol=2e-4, atol=2e-5,
                                       err_msg=f"{kind} slot {k} step {t}")
    # a plain pull carries no state
    resp, _ = pull(s, epoch, key)
    assert not resp.state and not resp.state_kinds
    # an ASSIGN (a re-upload) replaces the values and drops their optimizer state
    before = s.Health(pb.HealthRequest()).bytes
    assign(s, epoch, key, w)
    resp, got = pull(s, epoch, key, with_state=True)
    assert np.array_equal(got, w) and resp.state_kinds == [pb.OPT_NONE] and resp.state == b""
    assert s.Health(pb.HealthRequest()).bytes == before - 4 * n * len(ref_state)
    optimize(s, epoch, [key], [np.ones(n, np.float32)], spec(kind, **h))
    assert pull(s, epoch, key, with_state=True)[0].state_steps == [1]


def test_update_stream_carries_weights_not_state(shard):
    s, epoch = shard
    key = 0x5200
    assign(s, epoch, key, [1.0, 2.0, 3.0])
    start = s.Health(pb.HealthRequest()).seq
    optimize(s, epoch, [key], [[1.0, 1.0, 1.0]], spec("sgd", lr=0.5))
    stream = s.Subscribe(pb.SubscribeRequest(from_seq=start, incarnation=s.Health(pb.HealthRequest()).incarnation))
    for u in stream:
        if u.keepalive:
            continue
        assert u.key == key and u.op == pb.PUSH_ASSIGN, u
        assert np.array_equal(np.frombuffer(u.values, np.float32), [0.5, 1.5, 2.5])
        break
    stream.cancel()


def test_bad_optimizer_pushes_change_nothing(shard):
    s, epoch = shard
    key, other = 0x5300, 0x5301
    w = [1.0, -1.0]
    assign(s, epoch, key, w)
    bad = [
        (pb.PushRequest(epoch=epoch, keys=[key], lengths=[2], op=pb.PUSH_OPTIMIZE, values=f32(w)),
         grpc.StatusCode.INVALID_ARGUMENT, "must carry its optimizer"),
        (pb.PushRequest(epoch=epoch, keys=[key], lengths=[2], op=pb.PUSH_OPTIMIZE,
                        optimizer=pb.OptimizerSpec(kind=pb.OPT_ADAM, lr=0.1), values=f32(w)),
         grpc.StatusCode.INVALID_ARGUMENT, "eps"),
        (pb.PushRequest(epoch=epoch, keys=[key], lengths=[2], op=pb.PUSH_OPTIMIZE,
                        optimizer=spec("sgd", lr=-1.0), values=f32(w)),
         grpc.StatusCode.INVALID_ARGUMENT, "lr"),
        (pb.PushRequest(epoch=epoch, keys=[key], lengths=[2], op=pb.PUSH_OPTIMIZE,
                        optimizer=spec("sgd", lr=float("nan")), values=f32(w)),
         grpc.StatusCode.INVALID_ARGUMENT, "lr"),
        (pb.PushRequest(epoch=epoch, keys=[key], lengths=[2], op=pb.PUSH_OPTIMIZE,
                        optimizer=pb.OptimizerSpec(kind=9, lr=0.1), values=f32(w)),
         grpc.StatusCode.INVALID_ARGUMENT, "kind"),
        (pb.PushRequest(epoch=epoch, keys=[other], lengths=[2], op=pb.PUSH_OPTIMIZE,
                        optimizer=spec("sgd"), values=f32(w)),
         grpc.StatusCode.NOT_FOUND, "upload the model first"),
        (pb.PushRequest(epoch=epoch, keys=[key], lengths=[3], op=pb.PUSH_OPTIMIZE,
                        optimizer=spec("sgd"), values=f32([1, 2, 3])),
         grpc.StatusCode.INVALID_ARGUMENT, "holds 2 floats"),
        (pb.PushRequest(epoch=epoch, keys=[key], lengths=[2], op=pb.PUSH_OPTIMIZE,
                        optimizer=spec("sgd"), values=f32([1.0, float("inf")])),
         grpc.StatusCode.INVALID_ARGUMENT, "infinite"),
        (pb.PushRequest(epoch=epoch, keys=[key], lengths=[2], op=pb.PUSH_ADD, skip_non_finite=True,
                        values=f32([1.0, 1.0])),
         grpc.StatusCode.INVALID_ARGUMENT, "skip_non_finite is for optimizer pushes"),
        # a gradient so large that the step overflows: refused, nothing changes
        (pb.PushRequest(epoch=epoch, keys=[key], lengths=[2], op=pb.PUSH_OPTIMIZE,
                        optimizer=spec("sgd", lr=1e30), values=f32([3e38, 3e38])),
         grpc.StatusCode.INVALID_ARGUMENT, "non-finite"),
    ]
    for req, code, needle in bad:
        expect_error(code, needle, s.Push, req)
    resp, got = pull(s, epoch, key, with_state=True)
    assert np.array_equal(got, w) and resp.state_kinds == [pb.OPT_NONE] and resp.state == b""

    # a chunk keeps one optimizer: after an Adam step, SGD is refused
    optimize(s, epoch, [key], [[0.1, 0.1]], spec("adam"))
    _, after = pull(s, epoch, key)
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, "made by adam", optimize, s, epoch, [key],
                 [[0.1, 0.1]], spec("sgd"))
    _, same = pull(s, epoch, key)
    assert np.array_equal(after, same)


def test_non_finite_gradients_skipped_and_counted(shard):
    s, epoch = shard
    a, b = 0x5400, 0x5401
    assign(s, epoch, a, [1.0, 1.0])
    assign(s, epoch, b, [2.0, 2.0])
    before = s.Health(pb.HealthRequest()).skipped_non_finite
    # refused by default, and nothing of the push applies
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "NaN", optimize, s, epoch, [a, b],
                 [[1.0, 1.0], [float("nan"), 0.0]], spec("sgd", lr=1.0))
    assert np.array_equal(pull(s, epoch, a)[1], [1.0, 1.0])
    # skip_non_finite: the bad key is skipped (version 0) and counted, the other applies
    r = optimize(s, epoch, [a, b], [[1.0, 1.0], [float("nan"), 0.0]], spec("sgd", lr=1.0), skip=True)
    assert r.skipped == 1 and r.versions[0] > 0 and r.versions[1] == 0, r
    assert np.array_equal(pull(s, epoch, a)[1], [0.0, 0.0])
    assert np.array_equal(pull(s, epoch, b)[1], [2.0, 2.0])
    assert s.Health(pb.HealthRequest()).skipped_non_finite == before + 1
    # all skipped: nothing applies, the call still succeeds
    r = optimize(s, epoch, [b], [[float("inf"), 1.0]], spec("sgd", lr=1.0), skip=True)
    assert r.skipped == 1 and list(r.versions) == [0]


def test_state_counts_against_the_quota(tmp_path):
    procs = []
    try:
        p, coord = start_coordinator(tmp_path)
        procs.append(("coord", p))
        # room for 2 chunks of 1024 floats (8 KiB) but not for Adam's 2 slots on top
        p, addr = start_shard(tmp_path, coord, "shard-q", "--max-bytes", str(12 * 1024))
        procs.append(("shard-q", p))
        c = cpb_grpc.CoordinatorStub(grpc.insecure_channel(coord))
        epoch = wait_ring(c, ["shard-q"])
        s = shard_stub(addr)
        w = np.ones(1024, np.float32)
        assign(s, epoch, 1, w)
        assign(s, epoch, 2, w)
        expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "--max-bytes", optimize, s, epoch, [1],
                     [w], spec("adam"))
        assert np.array_equal(pull(s, epoch, 1)[1], w)
        optimize(s, epoch, [1], [w], spec("sgd"))  # one slot fits: 12 KiB exactly
        assert s.Health(pb.HealthRequest()).bytes == 12 * 1024
    finally:
        stop_all(tmp_path, procs)
