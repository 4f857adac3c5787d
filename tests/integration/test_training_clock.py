"""Training consistency through the coordinator (RegisterWorker, Clock, WaitClock),
driven with grpcio against a real coordinator: BSP and SSP waits block until the
slowest live worker catches up and are released when it does, a wait past its deadline
ends DEADLINE_EXCEEDED, a worker whose heartbeats stop is declared dead and no longer
holds the others back, ASP never waits, and bad calls get clear statuses."""
import threading
import time

import grpc
import pytest

from training_cluster import training_cluster

import coordinator_pb2 as cpb  # noqa: E402


@pytest.fixture(scope="module")
def coord(tmp_path_factory):
    """Workers silent 1.5 s are dead; models bsp, ssp (staleness 2) and asp."""
    models = {"bsp": {"consistency": "bsp"}, "ssp": {"consistency": "ssp", "staleness": 2},
              "asp": {}}
    with training_cluster(tmp_path_factory.mktemp("clock"), 1500, models) as (stub, _):
        yield stub


def register(stub, model, name="w"):
    return stub.RegisterWorker(cpb.RegisterWorkerRequest(model=model, name=name))


def clock(stub, model, wid, c):
    return stub.Clock(cpb.ClockRequest(model=model, worker_id=wid, clock=c))


def wait(stub, model, wid, c, timeout):
    return list(stub.WaitClock(cpb.WaitClockRequest(model=model, worker_id=wid, clock=c),
                               timeout=timeout))


def test_bsp_blocks_until_the_slowest_catches_up(coord):
    a, b = register(coord, "bsp", "a"), register(coord, "bsp", "b")
    assert a.consistency == "bsp" and a.staleness == 0 and a.timeout_ms == 1500
    assert a.clock == 0 and b.clock == 0
    clock(coord, "bsp", a.worker_id, 1)
    # a at clock 1 must wait for b: a short deadline passes first
    with pytest.raises(grpc.RpcError) as e:
        wait(coord, "bsp", a.worker_id, 1, timeout=0.5)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # a waits; b's clock releases it
    done = threading.Event()
    got = []

    def waiter():
        got.extend(wait(coord, "bsp", a.worker_id, 1, timeout=10))
        done.set()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    assert not done.is_set(), "the wait ended before the slowest worker caught up"
    r = clock(coord, "bsp", b.worker_id, 1)
    assert r.min_clock == 1 and r.live_workers == 2
    assert done.wait(5), "the wait was not released when the slowest worker caught up"
    t.join()
    assert len(got) == 1 and got[0].min_clock == 1
    for w in (a, b):
        coord.Clock(cpb.ClockRequest(model="bsp", worker_id=w.worker_id, leave=True))


def test_ssp_allows_staleness_and_no_more(coord):
    a, b = register(coord, "ssp", "a"), register(coord, "ssp", "b")
    assert a.staleness == 2
    for c in (1, 2, 3):
        clock(coord, "ssp", a.worker_id, c)
    assert len(wait(coord, "ssp", a.worker_id, 2, timeout=5)) == 1  # 2 - 2 <= 0: fine
    with pytest.raises(grpc.RpcError) as e:
        wait(coord, "ssp", a.worker_id, 3, timeout=0.5)  # 3 - 2 = 1 > b's 0
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    clock(coord, "ssp", b.worker_id, 1)
    assert len(wait(coord, "ssp", a.worker_id, 3, timeout=5)) == 1
    for w in (a, b):
        coord.Clock(cpb.ClockRequest(model="ssp", worker_id=w.worker_id, leave=True))


def test_a_dead_worker_no_longer_holds_the_others(coord):
    a, b = register(coord, "bsp", "alive"), register(coord, "bsp", "dies")
    clock(coord, "bsp", a.worker_id, 1)
    start = time.monotonic()
    # b never calls again: after the 1.5 s timeout it is dead and a's wait ends
    got = wait(coord, "bsp", a.worker_id, 1, timeout=10)
    assert len(got) == 1 and got[0].live_workers == 1
    assert time.monotonic() - start >= 1.0
    # the dead worker is told to register again
    with pytest.raises(grpc.RpcError) as e:
        clock(coord, "bsp", b.worker_id, 1)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "register again" in e.value.details()
    coord.Clock(cpb.ClockRequest(model="bsp", worker_id=a.worker_id, leave=True))


def test_asp_never_waits(coord):
    a, b = register(coord, "asp"), register(coord, "asp")
    assert a.consistency == "asp"
    clock(coord, "asp", a.worker_id, 50)
    assert len(wait(coord, "asp", a.worker_id, 50, timeout=2)) == 1
    for w in (a, b):
        coord.Clock(cpb.ClockRequest(model="asp", worker_id=w.worker_id, leave=True))


def test_bad_worker_calls(coord):
    def code(fn, *args, **kw):
        with pytest.raises(grpc.RpcError) as e:
            fn(*args, **kw)
        return e.value.code(), e.value.details()

    c, d = code(register, coord, "no-such-model")
    assert c == grpc.StatusCode.NOT_FOUND and "upload it" in d
    c, d = code(register, coord, "")
    assert c == grpc.StatusCode.NOT_FOUND
    c, d = code(clock, coord, "bsp", 987654, 1)  # a clock from an unknown worker
    assert c == grpc.StatusCode.NOT_FOUND and "register again" in d
    c, d = code(wait, coord, "bsp", 987654, 1, timeout=2)
    assert c == grpc.StatusCode.NOT_FOUND
    a = register(coord, "bsp")
    clock(coord, "bsp", a.worker_id, 5)
    c, d = code(clock, coord, "bsp", a.worker_id, 4)  # clocks never go back
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "cannot go back" in d
    coord.Clock(cpb.ClockRequest(model="bsp", worker_id=a.worker_id, leave=True))
    c, d = code(coord.Clock, cpb.ClockRequest(model="bsp", worker_id=a.worker_id, leave=True))
    assert c == grpc.StatusCode.NOT_FOUND
