"""The training scripts named in the README, run for real against scripts/cluster (a
private PS_RUN_DIR): scripts/train_digits.py trains the digits classifier from scratch
through psclient while a replica serves it, and prints its table with the served
version moving and the served accuracy rising; scripts/train_ctr.py trains a
click-through-rate model on a sparse table with FTRL and prints the served AUC rising
toward the planted model's, and the rows each shard made. (Short runs: the full ones
are what the README tells people to run.)"""
import os
import re
import subprocess
import sys

import pytest

from conftest import BUILD, SOURCE
from test_cluster_script import cluster_cmd


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("train-run")
    r = cluster_cmd(run_dir, "up", "--shards", "2", "--replicas", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    yield run_dir
    cluster_cmd(run_dir, "down")


def run_script(run_dir, name, *args, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "PS_COORDINATOR"}
    env.update(PS_RUN_DIR=str(run_dir), PS_BUILD_DIR=str(BUILD))
    return subprocess.run([sys.executable, str(SOURCE / "scripts" / name), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def table_rows(out):
    """[(step, loss, version, param_version, accuracy)] from a script's table."""
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s*$", line)
        if m:
            rows.append((int(m[1]), float(m[2]), m[3], int(m[4]), float(m[5])))
    return rows


def test_train_digits(cluster):
    r = run_script(cluster, "train_digits.py", "--steps", "120", "--every", "40")
    rows = table_rows(r.stdout)
    assert [x[0] for x in rows] == [40, 80, 120], r.stdout + r.stderr
    assert rows[-1][1] < rows[0][1], rows                       # the loss falls
    assert len({x[3] for x in rows}) == 3, rows                 # the replica follows
    assert rows[-1][4] > 0.9, rows                              # and classifies well
    assert "offline-trained sample model (0.9722)" in r.stdout, r.stdout
    assert r.returncode == (0 if rows[-1][4] >= 0.9722 else 1), (r.returncode, r.stdout)


def test_train_ctr(cluster):
    r = run_script(cluster, "train_ctr.py", "--steps", "60", "--every", "30", "--test", "5000")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = []
    for line in r.stdout.splitlines():
        m = re.match(r"\s*(\d+)\s+(\d+)\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s*$", line)
        if m:
            rows.append((int(m[1]), float(m[4]), float(m[5])))
    assert [x[0] for x in rows] == [0, 30, 60], r.stdout
    assert 0.4 < rows[0][1] < 0.6, rows            # untrained: no better than chance
    assert rows[1][1] > 0.65 and rows[2][1] >= rows[1][1], rows  # rising
    assert rows[-1][1] < rows[-1][2], rows           # below the planted model's
    m = re.search(r"rows created: (\d+) of table ctr/w .*: shard-1 (\d+), shard-2 (\d+)", r.stdout)
    assert m and int(m[1]) == int(m[2]) + int(m[3]) and int(m[2]) > 0 and int(m[3]) > 0, r.stdout
