"""Shared fixtures for the end-to-end tests: Python stubs generated from proto/*.proto,
and C servers started as real processes on loopback ports."""
import os
import pathlib
import signal
import subprocess
import sys

import pytest

SOURCE = pathlib.Path(os.environ.get("PS_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
BUILD = pathlib.Path(os.environ.get("PS_BUILD_DIR", SOURCE / "build"))
STUBS = BUILD / "pystubs"


def _generate_stubs():
    """Compiles every proto/*.proto to Python (messages and gRPC stubs) under the build
    directory, once per build, and puts that directory on sys.path."""
    from grpc_tools import protoc
    import grpc_tools

    STUBS.mkdir(parents=True, exist_ok=True)
    include = str(pathlib.Path(grpc_tools.__file__).parent / "_proto")
    for proto in sorted((SOURCE / "proto").glob("*.proto")):
        out = STUBS / (proto.stem + "_pb2.py")
        if out.exists() and out.stat().st_mtime >= proto.stat().st_mtime:
            continue
        rc = protoc.main(["protoc", f"-I{SOURCE / 'proto'}", f"-I{include}",
                          f"--python_out={STUBS}", f"--grpc_python_out={STUBS}", str(proto)])
        if rc != 0:
            raise RuntimeError(f"protoc failed for {proto}")
    if str(STUBS) not in sys.path:
        sys.path.insert(0, str(STUBS))


_generate_stubs()


class Server:
    """A C server process; `port` is where it listens."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"{argv[0]} did not start: {line!r} {self.proc.stderr.read()}")
        self.port = int(line.split()[1])
        self.target = f"127.0.0.1:{self.port}"

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Signals the process and returns its exit code (kills it if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"server did not exit within {timeout}s of signal {sig}")
        return self.proc.returncode


@pytest.fixture
def start_test_server():
    started = []

    def start(*args):
        s = Server([str(BUILD / "proto" / "rpc_test_server"), *args])
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
