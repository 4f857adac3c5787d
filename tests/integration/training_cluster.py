"""training_cluster: a coordinator (with a short training-worker timeout) and one shard,
with tiny models uploaded, each with its own config.json "training" fields: what the
tests of worker clocks and publishes start."""
import contextlib

import grpc

from conftest import BUILD, TINY_CONFIG, run_psctl, tiny_tensors, write_model
from test_shard_protocol import start, start_shard, stop_all, wait_ring

import coordinator_pb2_grpc as cpb_grpc  # noqa: E402


@contextlib.contextmanager
def training_cluster(tmp, worker_timeout_ms, models):
    """Yields (coordinator stub, address); `models` maps a model name to its training
    fields. Every process must exit cleanly at the end."""
    procs = []
    try:
        p, addr = start(tmp, "coord", [BUILD / "ps" / "ps-coordinator", "--listen", "127.0.0.1:0",
                                       "--state-dir", tmp / "st", "--heartbeat-ms", "200",
                                       "--worker-timeout-ms", str(worker_timeout_ms)])
        procs.append(("coord", p))
        p, _ = start_shard(tmp, addr, "shard-1")
        procs.append(("shard-1", p))
        stub = cpb_grpc.CoordinatorStub(grpc.insecure_channel(addr))
        wait_ring(stub, ["shard-1"])
        for name, training in models.items():
            d = write_model(tmp / name, dict(TINY_CONFIG, name=name, training=training),
                            tiny_tensors(3))
            assert run_psctl("model", "upload", d, coordinator=addr).rc == 0
        yield stub, addr
    finally:
        stop_all(tmp, procs)
