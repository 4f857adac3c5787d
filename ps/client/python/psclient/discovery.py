"""discovery.py: where the coordinator is, found the way the C programs find it
(ps/runtime/flags.c, ps_coordinator_addr): the address given, else $PS_COORDINATOR,
else the COORDINATOR= line of run/cluster.env in the current directory (scripts/cluster
up writes it).
"""
import os

from .errors import Error

CLUSTER_ENV = os.path.join("run", "cluster.env")


def coordinator_address(given=None):
    """The coordinator's "host:port"; Error saying the three options when none is set."""
    if given:
        return given
    env = os.environ.get("PS_COORDINATOR")
    if env:
        return env
    try:
        with open(CLUSTER_ENV) as f:
            for line in f:
                if line.startswith("COORDINATOR="):
                    value = line[len("COORDINATOR="):].strip()
                    if value:
                        return value
    except OSError:
        pass
    raise Error("no coordinator: pass Client(\"HOST:PORT\"), set PS_COORDINATOR, or run where "
                f"{CLUSTER_ENV} exists (scripts/cluster up writes it)")
