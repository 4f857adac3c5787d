"""registry.py: the model registry as the client sees it: each model's entry
(ModelInfo: version, tensors with shape and chunking, config.json) fetched from the
coordinator and cached for MAX_AGE_S, since psctl may change a model's config (its
optimizers' hyper-parameters) while training runs. While the coordinator cannot be
reached (down, restarting), an entry already held is used, and asked for again at the
next use. The training part of config.json is parsed on first use, so a pull never
fails over a training section it does not need.
"""
import json
import time

import grpc

from . import train_config
from ._wire import cpb
from .errors import Error
from .routing import COORDINATOR_TIMEOUT_S

MAX_AGE_S = 1.0
# Codes that say the coordinator could not be asked (down, restarting, unreachable):
# an entry already held is used meanwhile, so pushes its shards can take go on.
COORDINATOR_AWAY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class Tensor:
    """A tensor of a registry entry: name, shape, count, chunk_floats, chunks."""

    def __init__(self, info):
        self.name = info.name
        self.shape = tuple(int(d) for d in info.shape)
        self.count = 1
        for d in self.shape:
            self.count *= max(d, 0)
        self.chunk_floats = int(info.chunk_floats)
        self.chunks = int(info.chunks)
        self.dtype = info.dtype


class Entry:
    """One registry entry: model, version, tensors (name -> Tensor), config (dict)."""

    def __init__(self, info, fetched_at):
        self.model = info.name
        self.version = info.version
        self.fetched_at = fetched_at
        self.tensors = {t.name: Tensor(t) for t in info.tensors}
        self.config_json = info.config_json
        self._train = None

    def train(self):
        """The TrainConfig of the entry's config.json (ValueError when it is bad)."""
        if self._train is None:
            try:
                config = json.loads(self.config_json) if self.config_json else {}
            except json.JSONDecodeError as e:
                raise ValueError(f"config.json of model {self.model} version {self.version} "
                                 f"does not parse: {e}") from None
            if not isinstance(config, dict):
                raise ValueError(f"config.json of model {self.model} is not an object")
            self._train = train_config.parse(config, self.model)
        return self._train

    def tensor(self, name):
        t = self.tensors.get(name)
        if t is None:
            raise ValueError(f"model {self.model} version {self.version} has no tensor {name!r} "
                             f"(it has: {', '.join(sorted(self.tensors)) or 'none'})")
        if t.chunk_floats <= 0 or t.chunks != -(-t.count // t.chunk_floats):
            raise Error(f"the registry entry of {self.model}/{name} is inconsistent: "
                        f"{t.count} floats in {t.chunks} chunks of {t.chunk_floats}",
                        grpc.StatusCode.INTERNAL)
        return t

    def training_for(self, tensor):
        """(the tensor's Optimizer, skip_non_finite); ValueError when it has none."""
        train = self.train()
        opt = train.optimizer_for(tensor)
        if opt is None:
            raise ValueError(f"model {self.model} has no optimizer for tensor {tensor!r}: its "
                             "config.json names none in training.tensors or training.optimizer")
        return opt, train.non_finite == "skip"

    def table(self, name):
        tables = self.train().tables
        if name not in tables:
            raise ValueError(f"model {self.model} has no table {name!r} (its config.json "
                             f"names: {', '.join(sorted(tables)) or 'none'})")
        return tables[name]


class Registry:
    """Registry entries by (model, version); version 0 is the latest."""

    def __init__(self, coord_stub, coordinator_addr, max_age_s=MAX_AGE_S, clock=time.monotonic):
        self._coord = coord_stub
        self._addr = coordinator_addr
        self._max_age_s = max_age_s
        self._clock = clock  # seconds, monotonic (tests pass their own)
        self._cache = {}

    def _call(self, what, method, request):
        try:
            return method(request, timeout=COORDINATOR_TIMEOUT_S)
        except grpc.RpcError as e:
            raise Error(f"{what} at the coordinator {self._addr}: {e.code().name}: {e.details()}",
                        e.code(), e.details()) from None

    def get(self, model, version=None, fresh=False):
        """The entry of `model` at `version` (None or 0: the latest), re-fetched when
        older than max_age_s or when fresh is True."""
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty str, not {model!r}")
        version = int(version or 0)
        if version < 0:
            raise ValueError(f"version must be positive (or None for the latest), not {version}")
        now = self._clock()
        e = self._cache.get((model, version))
        if fresh or e is None or now - e.fetched_at > self._max_age_s:
            req = cpb.GetModelRequest(name=model, version=version)
            try:
                info = self._call(f"get model {model} version {version or 'latest'}",
                                  self._coord.GetModel, req)
            except Error as err:
                if fresh or e is None or err.code not in COORDINATOR_AWAY:
                    raise
                return e  # the coordinator is away: the entry held still routes; ask next time
            e = Entry(info, now)
            self._cache[(model, version)] = e
        return e

    def refresher(self, model, version, entry):
        """() -> the registry entry read again: the caller's (model, version), or, when
        that has moved on to another version, the version of `entry` (an operation's
        keys belong to the version it started with)."""
        def refresh():
            e = self.get(model, version, fresh=True)
            return e if e.version == entry.version else self.get(model, entry.version, fresh=True)
        return refresh

    def list(self):
        """(name, version) of every version of every model."""
        resp = self._call("list models", self._coord.ListModels, cpb.ListModelsRequest())
        return sorted((m.name, m.version) for m in resp.models)
