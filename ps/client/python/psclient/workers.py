"""workers.py: this client as a training worker of a model, with a logical clock
(coordinator RPCs RegisterWorker, Clock, WaitClock; DESIGN.md "Training consistency").

A worker registers on its first clock() of a model (or first pull of a model whose
consistency is bsp or ssp) and starts at the slowest live worker's clock. clock()
says it finished a step: every push of that step is applied (pushes are synchronous)
before the coordinator hears of it. Before a pull, a bsp/ssp worker waits until every
live worker is within the model's staleness bound of its clock (asp never waits); the
wait ends with psclient.Error DEADLINE_EXCEEDED after wait_timeout_s. Every registered
worker asks once per step, asp too: while a publish of the model runs (consistent
propagation), the coordinator parks the wait, so no push of the worker is in flight
when the cut is taken.

A background thread repeats the current clock as a heartbeat (a third of the
coordinator's timeout), so a worker that computes for a long time is not declared
dead; a worker that was (it was silent too long, or the coordinator restarted)
registers again at the slowest clock. close() leaves, so the others stop waiting for it.
"""
import threading

import grpc

from ._wire import cpb
from .errors import Error

COORDINATOR_TIMEOUT_S = 5.0


class Worker:
    """This client's place among one model's training workers."""

    def __init__(self, coord, addr, model, name):
        self._coord, self._addr, self.model, self._name = coord, addr, model, name
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._register()
        self._waited = None  # the clock a wait last succeeded at
        self._beat = threading.Thread(target=self._heartbeats, daemon=True,
                                      name=f"psclient-worker-{model}")
        self._beat.start()

    def _call(self, what, method, request, timeout=COORDINATOR_TIMEOUT_S):
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as e:
            raise Error(f"{what} of model {self.model} at the coordinator {self._addr}: "
                        f"{e.code().name}: {e.details()}", e.code(), e.details()) from None

    def _register(self):
        r = self._call("register as a training worker", self._coord.RegisterWorker,
                       cpb.RegisterWorkerRequest(model=self.model, name=self._name))
        self.id, self.clock = r.worker_id, r.clock
        self.consistency, self.staleness = r.consistency, r.staleness
        self.timeout_s = max(r.timeout_ms, 300) / 1000.0

    def _again_if_dead(self, fn):
        """Runs fn(); when the coordinator no longer knows this worker, registers again
        (keeping the clock when it is ahead of the slowest) and runs it once more."""
        try:
            return fn()
        except Error as e:
            if e.code != grpc.StatusCode.NOT_FOUND:
                raise
            clock = self.clock
            self._register()
            if clock > self.clock:
                self._call("clock", self._coord.Clock,
                           cpb.ClockRequest(model=self.model, worker_id=self.id, clock=clock))
                self.clock = clock
            return fn()

    def tick(self):
        """One step finished: the clock advances by one. Returns the new clock."""
        with self._lock:
            def call():
                return self._call("clock", self._coord.Clock,
                                  cpb.ClockRequest(model=self.model, worker_id=self.id,
                                                   clock=self.clock + 1))
            self._again_if_dead(call)
            self.clock += 1
            return self.clock

    def wait(self, timeout_s):
        """Blocks until this worker may read under the model's consistency."""
        with self._lock:
            if self._waited == self.clock:
                return  # once per step (asp too: a publish may park it here)

            def call():
                req = cpb.WaitClockRequest(model=self.model, worker_id=self.id, clock=self.clock)
                try:
                    for _ in self._coord.WaitClock(req, timeout=timeout_s):
                        return
                except grpc.RpcError as e:
                    raise Error(f"wait for the other workers of model {self.model} (clock "
                                f"{self.clock}, {self.consistency} staleness {self.staleness}): "
                                f"{e.code().name}: {e.details()}", e.code(), e.details()) from None
                raise Error(f"the coordinator ended the wait of model {self.model} without an "
                            "answer", grpc.StatusCode.UNAVAILABLE, "")
            self._again_if_dead(call)
            self._waited = self.clock

    def _heartbeats(self):
        while not self._stop.wait(self.timeout_s / 3):
            with self._lock:
                try:
                    self._again_if_dead(lambda: self._call(
                        "heartbeat", self._coord.Clock,
                        cpb.ClockRequest(model=self.model, worker_id=self.id, clock=self.clock)))
                except Error:
                    pass  # the next call says why, to the caller

    def leave(self):
        self._stop.set()
        self._beat.join()
        try:
            self._coord.Clock(cpb.ClockRequest(model=self.model, worker_id=self.id, leave=True),
                              timeout=COORDINATOR_TIMEOUT_S)
        except grpc.RpcError:
            pass  # it will be declared dead after the timeout instead
