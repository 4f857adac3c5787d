"""psctl model publish, the coordinator's side of consistent propagation, against a
real coordinator and shard (no replicas here: tests/e2e/test_consistent.py has them):
a publish parks the model's training workers between steps (it waits while one is
mid-step and commits once every live one waits; their waits then go on), numbers its
cuts in the registry (ModelInfo.published, kept across a coordinator restart), gives up
with nothing changed at its deadline, and refuses a model that propagates by
streaming, an unknown model, and a second publish of the same model at once."""
import json
import threading
import time

import grpc
import pytest

from conftest import run_psctl
from training_cluster import training_cluster

import coordinator_pb2 as cpb  # noqa: E402


@pytest.fixture(scope="module")
def coord(tmp_path_factory):
    models = {"cons": {"propagation": "consistent", "consistency": "asp"}, "stream": {}}
    with training_cluster(tmp_path_factory.mktemp("publish"), 3000, models) as c:
        yield c


def publish(addr, model, *args):
    return run_psctl("model", "publish", model, *args, coordinator=addr)


def published(stub, model):
    return stub.GetModel(cpb.GetModelRequest(name=model)).published


def test_publish_parks_workers_between_steps(coord):
    stub, addr = coord
    before = published(stub, "cons")
    w = stub.RegisterWorker(cpb.RegisterWorkerRequest(model="cons", name="trainer"))
    result = {}

    def run():
        result["r"] = publish(addr, "cons", "--wait-s", "20")

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.6)  # the worker is mid-step (not in a wait): the publish must hold
    assert t.is_alive(), result
    assert published(stub, "cons") == before
    # the worker ends its step and waits: parked, the publish commits, the wait goes on
    stub.Clock(cpb.ClockRequest(model="cons", worker_id=w.worker_id, clock=1))
    got = list(stub.WaitClock(cpb.WaitClockRequest(model="cons", worker_id=w.worker_id, clock=1),
                              timeout=20))
    t.join(20)
    assert len(got) == 1
    r = result["r"]
    assert r.rc == 0, r
    doc = json.loads(r.out)
    assert doc["publish"] == before + 1 and doc["phases"][-1]["phase"] == "committed", doc
    assert [ph["phase"] for ph in doc["phases"]] == ["fencing", "preparing", "committed"], doc
    assert doc["phases"][0]["workers"] == 1 or doc["phases"][1]["workers"] == 1, doc
    assert published(stub, "cons") == before + 1
    # with no worker at all, a publish commits at once; text mode says each phase
    stub.Clock(cpb.ClockRequest(model="cons", worker_id=w.worker_id, leave=True))
    r = run_psctl("model", "publish", "cons", coordinator=addr, json_mode=False)
    assert r.rc == 0 and "committed" in r.out and "fencing" in r.out, r
    assert published(stub, "cons") == before + 2


def test_publish_deadline_changes_nothing(coord):
    stub, addr = coord
    before = published(stub, "cons")
    w = stub.RegisterWorker(cpb.RegisterWorkerRequest(model="cons", name="busy"))
    r = publish(addr, "cons", "--wait-s", "1")  # the worker never parks
    assert r.rc == 1 and "DEADLINE_EXCEEDED" in r.err and "park" in r.err, r
    assert published(stub, "cons") == before
    # the fence is lifted: the worker's waits go through (asp)
    got = list(stub.WaitClock(cpb.WaitClockRequest(model="cons", worker_id=w.worker_id, clock=0),
                              timeout=5))
    assert len(got) == 1
    stub.Clock(cpb.ClockRequest(model="cons", worker_id=w.worker_id, leave=True))


def test_publish_refusals(coord):
    stub, addr = coord
    r = publish(addr, "stream")
    assert r.rc == 1 and "FAILED_PRECONDITION" in r.err and "propagation" in r.err, r
    r = publish(addr, "no-such-model")
    assert r.rc == 1 and "NOT_FOUND" in r.err, r
    r = run_psctl("model", "publish", coordinator=addr)
    assert r.rc == 2 and "which model?" in r.err, r
    # a second publish of the same model while one runs
    w = stub.RegisterWorker(cpb.RegisterWorkerRequest(model="cons", name="busy"))
    t = threading.Thread(target=lambda: publish(addr, "cons", "--wait-s", "3"))
    t.start()
    time.sleep(0.5)
    r = publish(addr, "cons", "--wait-s", "1")
    assert r.rc == 1 and "being published already" in r.err, r
    t.join()
    stub.Clock(cpb.ClockRequest(model="cons", worker_id=w.worker_id, leave=True))
    # Prepared for a publish that does not run
    with pytest.raises(grpc.RpcError) as e:
        stub.Prepared(cpb.PreparedRequest(node_id="serve-x", model="cons", version=1, publish=99))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_publish_whose_caller_goes_away_lifts_the_fence(coord):
    """A client that starts a publish and stops reading (cancels) must not leave the
    model fenced: the workers' waits go on and the next publish may start."""
    stub, addr = coord
    before = published(stub, "cons")
    busy = stub.RegisterWorker(cpb.RegisterWorkerRequest(model="cons", name="busy"))
    stream = stub.Publish(cpb.PublishRequest(model="cons"), timeout=30)
    first = next(stream)  # "fencing": the busy worker never parks
    assert first.phase == "fencing"
    stream.cancel()
    # the fence goes within a few polls: a wait of the worker returns, asp
    deadline = time.monotonic() + 10
    while True:
        try:
            got = list(stub.WaitClock(cpb.WaitClockRequest(model="cons", worker_id=busy.worker_id,
                                                           clock=0), timeout=1))
            assert len(got) == 1
            break
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() < deadline, "the fence stayed after the caller left"
    assert published(stub, "cons") == before
    stub.Clock(cpb.ClockRequest(model="cons", worker_id=busy.worker_id, leave=True))
    r = publish(addr, "cons")  # nobody is publishing any more
    assert r.rc == 0, r


def test_an_upload_keeps_the_coordinators_publish_numbers(coord):
    """ModelInfo.published is the coordinator's: a re-upload of a published version keeps
    it whatever the uploader sends (before, it was taken as sent: 2^63 or more made the
    next start refuse the state file), and a new version starts with none."""
    stub, addr = coord
    assert publish(addr, "cons").rc == 0
    info = stub.GetModel(cpb.GetModelRequest(name="cons"))
    before = info.published
    assert before >= 1
    again = cpb.ModelInfo()
    again.CopyFrom(info)
    again.published = 2**64 - 1
    again.publishing = 42
    stub.RegisterModel(cpb.RegisterModelRequest(model=again))  # the same version again
    now = stub.GetModel(cpb.GetModelRequest(name="cons", version=info.version))
    assert (now.published, now.publishing) == (before, 0)
    again.version = 0  # the next version
    v = stub.RegisterModel(cpb.RegisterModelRequest(model=again)).version
    assert v == info.version + 1
    new = stub.GetModel(cpb.GetModelRequest(name="cons", version=v))
    assert (new.published, new.publishing) == (0, 0)
