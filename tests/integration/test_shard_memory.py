"""A shard's memory against the data it holds (issue 7: after uploading a model the
shards held 2.4x its size, 3.1x after three full ADDs, because the update log kept
copies of every pushed value and buffers were kept per request). A shard with a small
log takes 96 MiB of chunks in 16 MiB pushes, then three ADDs over all of them; its
resident memory beyond what it had at start, less its log bound, must stay within
1.6x the data it reports holding (the old shard: 2.25x; this one about 1.4x: the rest
is a push's received message and its blocks, which the allocator keeps for the next).
Not run in a sanitizer build (its allocator keeps freed memory on purpose)."""
import json
import pathlib
import time

import grpc
import numpy as np
import pytest

from conftest import BUILD, COORDINATOR_BIN, SHARD_BIN, Proc, sanitizer_report

import ps_pb2 as pb  # noqa: E402
import ps_pb2_grpc as pb_grpc  # noqa: E402

LOG_MB = 8
CHUNK = 64 * 1024          # floats per key: the default chunk
KEYS_PER_PUSH = 64         # 16 MiB a push
PUSHES = 6                 # 96 MiB in all
LIMIT_X = 1.6
BIG = [("grpc.max_receive_message_length", 100 << 20), ("grpc.max_send_message_length", 100 << 20)]


def sanitized_build():
    try:
        doc = json.loads((BUILD / "meson-info" / "intro-buildoptions.json").read_text())
    except (OSError, ValueError):
        return False
    return any(o["name"] == "b_sanitize" and o["value"] not in ("none", "") for o in doc)


def rss_bytes(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(sanitized_build(), reason="a sanitizer's allocator keeps freed memory")
def test_shard_memory_stays_near_the_data(tmp_path):
    coord = Proc("coordinator", [COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--state-dir",
                                 tmp_path / "state", "--heartbeat-ms", 200], tmp_path)
    shard = Proc("shard-1", [SHARD_BIN, "--id", "shard-1", "--coordinator", coord.addr,
                             "--log-mb", LOG_MB], tmp_path)
    try:
        stub = pb_grpc.ParameterServerStub(grpc.insecure_channel(shard.addr, options=BIG))
        deadline = time.monotonic() + 30
        while stub.Health(pb.HealthRequest()).epoch == 0:  # until the shard has the ring
            assert time.monotonic() < deadline, "the shard never got a ring"
            time.sleep(0.05)
        epoch = stub.Health(pb.HealthRequest()).epoch
        idle = rss_bytes(shard.proc.pid)
        values = np.arange(KEYS_PER_PUSH * CHUNK, dtype=np.float32).tobytes()
        ones = np.ones(KEYS_PER_PUSH * CHUNK, dtype=np.float32).tobytes()
        for op, payload in [(pb.PUSH_ASSIGN, values)] + [(pb.PUSH_ADD, ones)] * 3:
            for p in range(PUSHES):
                keys = [p * KEYS_PER_PUSH + i + 1 for i in range(KEYS_PER_PUSH)]
                stub.Push(pb.PushRequest(epoch=epoch, keys=keys, lengths=[CHUNK] * len(keys),
                                         op=op, values=payload), timeout=60)
        held = stub.Health(pb.HealthRequest()).bytes
        assert held == PUSHES * KEYS_PER_PUSH * CHUNK * 4
        grown = rss_bytes(shard.proc.pid) - idle - (LOG_MB << 20)
        assert grown <= LIMIT_X * held, (
            f"the shard grew by {grown / 2**20:.0f} MiB beyond its {LOG_MB} MiB log for "
            f"{held / 2**20:.0f} MiB of data ({grown / held:.2f}x, want <= {LIMIT_X}x)")
    finally:
        for p in (shard, coord):
            p.stop()
        for p in (shard, coord):
            assert sanitizer_report(p.log()) is None
