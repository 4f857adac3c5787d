"""A shard whose disk fills up (issue 8 item 6): its write-ahead log cannot grow, so
pushes are refused with a clear UNAVAILABLE ("not acknowledged"), nothing is
acknowledged that is not durable, the shard keeps answering reads, and after a restart
with room again the value is exactly the sum of the acknowledged ADDs.

The full disk is the file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored, as a full
file system answers a write that does not fit: the write fails), so the test needs no
privilege to make a small file system."""
import resource
import signal
import time

import grpc
import numpy as np

from conftest import BUILD
from test_shard_protocol import log_text, shard_stub, start, start_coordinator, stop_all, wait_ring

import coordinator_pb2_grpc as cpb_grpc  # noqa: E402
import ps_pb2 as pb  # noqa: E402

LIMIT = 1 << 20  # bytes any file of the shard may hold: the log fills it after ~1 MiB


def limit_file_size():
    """In the child: writes past LIMIT fail (EFBIG) like a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # kept across exec
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_a_full_disk_refuses_writes_and_acknowledges_only_what_is_durable(tmp_path):
    procs = []
    coord_p, coord = start_coordinator(tmp_path)
    procs.append(("coord", coord_p))
    data = tmp_path / "data"
    argv = [BUILD / "ps" / "ps-shard", "--id", "shard-1", "--coordinator", coord,
            "--data-dir", data, "--fsync", "always"]
    shard, addr = start(tmp_path, "shard-a", argv, preexec_fn=limit_file_size)
    try:
        c = cpb_grpc.CoordinatorStub(grpc.insecure_channel(coord))
        epoch = wait_ring(c, ["shard-1"])
        s = shard_stub(addr)
        n = 16 * 1024  # 64 KiB a push: the log fills after about 16
        s.Push(pb.PushRequest(epoch=epoch, keys=[7], lengths=[n],
                              values=np.zeros(n, np.float32).tobytes()), timeout=30)
        ones = np.ones(n, np.float32).tobytes()
        acked, refused = 0, None
        for _ in range(200):
            try:
                s.Push(pb.PushRequest(epoch=epoch, keys=[7], lengths=[n], op=pb.PUSH_ADD,
                                      values=ones), timeout=30)
                acked += 1
            except grpc.RpcError as e:
                refused = e
                break
        assert refused is not None, "the log never filled up"
        assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused
        assert "not acknowledged" in refused.details(), refused.details()
        again = None
        try:  # the shard keeps refusing writes (its log failed) ...
            s.Push(pb.PushRequest(epoch=epoch, keys=[8], lengths=[1], values=b"\0\0\0\0"))
        except grpc.RpcError as e:
            again = e
        assert again is not None and again.code() == grpc.StatusCode.UNAVAILABLE
        assert s.Health(pb.HealthRequest()).keys >= 1  # ... and keeps answering reads
        deadline = time.monotonic() + 10  # and says so in its log, once
        while "the write-ahead log failed" not in log_text(tmp_path, "shard-a"):
            assert time.monotonic() < deadline, log_text(tmp_path, "shard-a")[-2000:]
            time.sleep(0.05)
        shard.send_signal(signal.SIGKILL)
        shard.wait(timeout=10)
        shard, addr = start(tmp_path, "shard-b", argv)  # room again
        r = shard_stub(addr).Pull(pb.PullRequest(epoch=epoch, keys=[7]), timeout=30)
        value = np.frombuffer(r.values, np.float32)
        assert np.all(value == float(acked)), (np.unique(value), acked)
        print(f"{acked} ADDs acknowledged before the disk was full; all of them after restart")
        procs.append(("shard-b", shard))
    finally:
        if shard.poll() is None and ("shard-b", shard) not in procs:
            shard.kill()
            shard.wait()
        stop_all(tmp_path, procs)
