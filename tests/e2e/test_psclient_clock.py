"""psclient's logical clocks (Client.clock and the wait before a pull) against a real
coordinator and shards: under BSP a pull of a worker one step ahead blocks until the
slowest worker's clock() and is then released; a worker that closes stops holding the
others; ASP never waits; a wait past the client's wait_timeout_s raises
psclient.Error DEADLINE_EXCEEDED."""
import threading
import time

import grpc
import pytest

import numpy as np
import psclient_support as sup
from psclient_support import integration, psclient


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two shards and two models of one dense layer: clk_bsp (bsp) and clk_asp."""
    c = integration.Cluster(tmp_path_factory.mktemp("clock"), shards=2)
    for name, training in (("clk_bsp", {"consistency": "bsp", "optimizer": {"type": "sgd"}}),
                           ("clk_asp", {"optimizer": {"type": "sgd"}})):
        sup.register(c, sup.dense_config(name, 4, 3, training=training),
                     {"fc.weight": (3, 4), "fc.bias": (3,)}, 16)
        with psclient.Client(c.coordinator) as pc:
            pc.assign(name, "fc.weight", np.zeros((3, 4), np.float32))
            pc.assign(name, "fc.bias", np.zeros(3, np.float32))
    yield c
    reports = c.stop()
    assert not reports, "sanitizer reports in server logs:\n" + "\n".join(reports)


def test_bsp_pull_waits_for_the_slowest(cluster):
    a = psclient.Client(cluster.coordinator, name="a", wait_timeout_s=20)
    b = psclient.Client(cluster.coordinator, name="b", wait_timeout_s=20)
    try:
        a.pull("clk_bsp", "fc.bias")  # both register at clock 0 and read freely
        b.pull("clk_bsp", "fc.bias")
        assert a.clock("clk_bsp") == 1
        released = threading.Event()

        def pull_ahead():
            a.pull("clk_bsp", "fc.bias")
            released.set()

        t = threading.Thread(target=pull_ahead)
        t.start()
        time.sleep(0.4)
        assert not released.is_set(), "a pull one step ahead did not wait for the slowest worker"
        assert b.clock("clk_bsp") == 1
        assert released.wait(10), "the pull was not released by the slowest worker's clock"
        t.join()
        # a runs ahead again; b leaves: a is no longer held back
        a.clock("clk_bsp")
        b.close()
        a.pull("clk_bsp", "fc.bias")
    finally:
        a.close()
        b.close()


def test_wait_timeout_and_asp(cluster):
    a = psclient.Client(cluster.coordinator, wait_timeout_s=0.5)
    b = psclient.Client(cluster.coordinator)
    try:
        a.pull("clk_bsp", "fc.bias")
        b.pull("clk_bsp", "fc.bias")
        a.clock("clk_bsp")
        with pytest.raises(psclient.Error) as e:
            a.pull("clk_bsp", "fc.bias")
        assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED, e.value
        # ASP: clocks advance, nobody waits
        for _ in range(3):
            a.clock("clk_asp")
        a.pull("clk_asp", "fc.bias")
    finally:
        a.close()
        b.close()
