"""scripts/cluster up/status/down, run for real with PS_RUN_DIR pointing at a temporary
directory (so the tests never touch the repository's run/) and PS_BUILD_DIR at the
build under test: the env file and pid files it writes, psctl finding the cluster
through them, refusing a second cluster, reporting a dead process, stopping everything,
and a start-up failure that must stop what was started and show the failing log."""
import os
import pathlib
import signal
import subprocess
import time

import pytest

from conftest import BUILD, SOURCE, run_psctl

SCRIPT = SOURCE / "scripts" / "cluster"


def cluster_cmd(run_dir, *args, build=BUILD, timeout=180):
    env = {k: v for k, v in os.environ.items() if k not in ("PS_COORDINATOR",)}
    env.update(PS_RUN_DIR=str(run_dir), PS_BUILD_DIR=str(build))
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def env_file(run_dir):
    out = {}
    for line in (run_dir / "cluster.env").read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def processes_mentioning(text):
    """Pids of live processes whose command line contains text."""
    found = []
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and pid_alive(int(p.name)):
            found.append((int(p.name), cmd))
    return found


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    yield d
    # whatever happened, leave nothing running
    if (d / "pids").exists():
        cluster_cmd(d, "down")
    for pid, _ in processes_mentioning(str(d)):
        os.kill(pid, signal.SIGKILL)


def test_help_and_usage_errors(run_dir):
    for args in (["--help"], ["up", "--help"], ["down", "--help"], ["status", "--help"]):
        r = cluster_cmd(run_dir, *args)
        assert r.returncode == 0 and "scripts/cluster up" in r.stdout, r
    for args in (["frob"], ["up", "--shards", "0"], ["up", "--replicas", "x"], ["up", "--bogus"], []):
        r = cluster_cmd(run_dir, *args)
        assert r.returncode == 2, r
    assert not (run_dir / "pids").exists() or not list((run_dir / "pids").iterdir())


def test_up_status_down(run_dir, tmp_path):
    r = cluster_cmd(run_dir, "down")
    assert r.returncode == 0 and "nothing to stop" in r.stdout, r
    r = cluster_cmd(run_dir, "status")
    assert r.returncode == 3 and "no cluster running" in r.stdout, r

    r = cluster_cmd(run_dir, "up", "--shards", "2", "--replicas", "0")
    assert r.returncode == 0, r
    env = env_file(run_dir)
    assert env["COORDINATOR"].startswith("127.0.0.1:")
    shards = env["SHARDS"].split(",")
    assert len(shards) == 2 and all(s.startswith("127.0.0.1:") for s in shards)
    assert env["SERVE"] == ""
    pids = {p.stem: int(p.read_text()) for p in (run_dir / "pids").glob("*.pid")}
    assert set(pids) == {"coordinator", "shard-1", "shard-2"}
    assert all(pid_alive(pid) for pid in pids.values())
    for name in pids:
        assert (run_dir / "logs" / f"{name}.log").exists()

    # psctl finds the cluster through PS_RUN_DIR/cluster.env
    r = run_psctl("ring", "list", env_extra={"PS_RUN_DIR": str(run_dir)}, cwd=tmp_path)
    assert r.rc == 0, r
    assert {s["addr"] for s in r.doc["shards"]} == set(shards)
    assert all(s["alive"] for s in r.doc["shards"])

    r = cluster_cmd(run_dir, "status")
    assert r.returncode == 0, r
    for word in ("coordinator", "shard-1", "shard-2", "running", "ring epoch", env["COORDINATOR"]):
        assert word in r.stdout, (word, r.stdout)

    r = cluster_cmd(run_dir, "up", "--shards", "2", "--replicas", "0")
    assert r.returncode == 1 and "already running" in r.stderr and "scripts/cluster down" in r.stderr, r
    assert env_file(run_dir) == env

    os.kill(pids["shard-2"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(pids["shard-2"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    r = cluster_cmd(run_dir, "status")
    assert r.returncode == 1 and "DEAD" in r.stdout, r

    r = cluster_cmd(run_dir, "down")
    assert r.returncode == 0 and "stopped" in r.stdout, r
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not (run_dir / "cluster.env").exists()
    assert not list((run_dir / "pids").glob("*.pid"))
    assert (run_dir / "logs" / "coordinator.log").read_text().strip()  # logs are kept

    r = cluster_cmd(run_dir, "down")
    assert r.returncode == 0 and "nothing to stop" in r.stdout, r
    r = cluster_cmd(run_dir, "status")
    assert r.returncode == 3, r


def test_failed_start_stops_the_others_and_shows_the_log(run_dir, tmp_path):
    fake = tmp_path / "fakebuild"
    (fake / "ps").mkdir(parents=True)
    for name in ("ps-coordinator", "psctl"):
        (fake / "ps" / name).symlink_to(BUILD / "ps" / name)
    shard = fake / "ps" / "ps-shard"
    shard.write_text("#!/bin/sh\necho 'ps-shard: simulated bind failure' >&2\nsleep 0.2\nexit 3\n")
    shard.chmod(0o755)

    r = cluster_cmd(run_dir, "up", "--shards", "2", "--replicas", "0", build=fake)
    assert r.returncode == 1, r
    assert "exited during start-up" in r.stderr and "simulated bind failure" in r.stderr, r
    assert not (run_dir / "cluster.env").exists()
    assert not list((run_dir / "pids").glob("*.pid"))
    assert not processes_mentioning(str(run_dir)), "up left processes running"
    assert "stopped" in (run_dir / "logs" / "coordinator.log").read_text().splitlines()[-1]
