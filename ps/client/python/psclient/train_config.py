"""train_config.py: the `training` and `tables` sections of a model's config.json (the
registry's ModelInfo.config_json), read the way the C side reads them
(kernels/modelfile/train_config.h, ps/common/train_spec.h; unknown keys are errors
there and here):

    "training": {"optimizer": {"type": "adam", "lr": 0.001},   # every dense tensor
                 "tensors": {"fc1.weight": {"type": "sgd", "lr": 0.1}},
                 "non_finite": "reject",                        # or "skip"
                 "consistency": "asp", "staleness": 1, "propagation": "streaming"}
    "tables": [{"name": "user_emb", "dim": 16, "seed": 7,
                "init": {"type": "normal", "scale": 0.01},
                "optimizer": {"type": "adagrad", "lr": 0.05}}]

An optimizer is "type" plus hyper-parameters of that kind (missing ones take the kind's
defaults). A tensor's optimizer is its `tensors` entry, else `optimizer`, else none.
Problems raise ValueError naming the model and the field.
"""
import math
from dataclasses import dataclass, field

# Hyper-parameters each kind uses, with its defaults (train_spec.h, optim_spec_defaults).
OPTIMIZER_DEFAULTS = {
    "sgd": {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0},
    "adagrad": {"lr": 0.01, "weight_decay": 0.0, "eps": 1e-10, "initial_accumulator": 0.0},
    "adam": {"lr": 0.001, "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    "ftrl": {"lr": 0.05, "l1": 0.0, "l2": 0.0, "beta": 1.0},
}
INIT_KINDS = ("zeros", "uniform", "normal")
NON_FINITE = ("reject", "skip")
TABLE_MAX_DIM = 4096  # train_spec.h TABLE_MAX_DIM
CONSISTENCY = ("asp", "bsp", "ssp")   # training fields the shards and workers act on
PROPAGATION = ("streaming", "consistent")
MAX_STALENESS = 1000000  # TRAIN_CONFIG_MAX_STALENESS


@dataclass(frozen=True)
class Optimizer:
    kind: str                      # sgd, adagrad, adam, ftrl
    params: dict = field(default_factory=dict)  # every hyper-parameter of the kind


@dataclass(frozen=True)
class Table:
    name: str
    dim: int
    init: str = "zeros"
    init_scale: float = 0.0
    seed: int = 0
    optimizer: Optimizer = None    # None: rows can be pulled, not pushed


@dataclass
class TrainConfig:
    default: Optimizer = None
    tensors: dict = field(default_factory=dict)   # tensor name -> Optimizer
    non_finite: str = "reject"
    tables: dict = field(default_factory=dict)    # table name -> Table
    consistency: str = "asp"                      # "asp", "bsp" or "ssp" (workers.py)
    propagation: str = "streaming"                # or "consistent" (publishes fence workers)

    def optimizer_for(self, tensor):
        return self.tensors.get(tensor, self.default)


def _keys(obj, allowed, where):
    if not isinstance(obj, dict):
        raise ValueError(f"{where} must be an object")
    extra = sorted(set(obj) - set(allowed))
    if extra:
        raise ValueError(f"{where}: unknown field \"{extra[0]}\" (expected: {', '.join(allowed)})")


def _number(v, where):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{where} must be a finite number, not {v!r}")
    return float(v)


def _check_range(name, v, where):
    if name == "lr" and not v > 0:
        raise ValueError(f"{where}.lr must be > 0, not {v}")
    if name in ("momentum", "beta1", "beta2") and not 0 <= v < 1:
        raise ValueError(f"{where}.{name} must be in [0, 1), not {v}")
    if name == "eps" and not v > 0:
        raise ValueError(f"{where}.eps must be > 0, not {v}")
    if name in ("weight_decay", "initial_accumulator", "l1", "l2", "beta") and not v >= 0:
        raise ValueError(f"{where}.{name} must be >= 0, not {v}")


def parse_optimizer(obj, where):
    if not isinstance(obj, dict):
        raise ValueError(f"{where} must be an object")
    kind = obj.get("type")
    if kind not in OPTIMIZER_DEFAULTS:
        raise ValueError(f"{where}.type must be one of {', '.join(OPTIMIZER_DEFAULTS)}, "
                         f"not {kind!r}")
    params = dict(OPTIMIZER_DEFAULTS[kind])
    _keys(obj, ["type"] + list(params), f"{where} ({kind})")
    for name in params:
        if name in obj:
            params[name] = _number(obj[name], f"{where}.{name}")
            _check_range(name, params[name], where)
    return Optimizer(kind, params)


def _parse_table(obj, where):
    _keys(obj, ["name", "dim", "seed", "init", "optimizer"], where)
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name must be a non-empty string")
    dim = obj.get("dim")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= TABLE_MAX_DIM:
        raise ValueError(f"{where}.dim must be an integer in 1..{TABLE_MAX_DIM}, not {dim!r}")
    seed = obj.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64:
        raise ValueError(f"{where}.seed must be an integer in 0..2^64-1, not {seed!r}")
    init, scale = "zeros", 0.0
    if "init" in obj:
        _keys(obj["init"], ["type", "scale"], f"{where}.init")
        init = obj["init"].get("type", "zeros")
        if init not in INIT_KINDS:
            raise ValueError(f"{where}.init.type must be one of {', '.join(INIT_KINDS)}")
        scale = _number(obj["init"].get("scale", 0.0), f"{where}.init.scale")
        if scale < 0:
            raise ValueError(f"{where}.init.scale must be >= 0, not {scale}")
    opt = parse_optimizer(obj["optimizer"], f"{where}.optimizer") if "optimizer" in obj else None
    return Table(name, dim, init, scale, seed, opt)


def _check_policies(training, where):
    """The policies (consistency, staleness, propagation), checked as the C side does;
    the coordinator applies them (this client only needs to know whether to wait)."""
    if training.get("consistency", "asp") not in CONSISTENCY:
        raise ValueError(f"{where}.consistency must be one of {', '.join(CONSISTENCY)}")
    if training.get("propagation", "streaming") not in PROPAGATION:
        raise ValueError(f"{where}.propagation must be one of {', '.join(PROPAGATION)}")
    st = training.get("staleness", 1)
    if isinstance(st, bool) or not isinstance(st, int) or not 0 <= st <= MAX_STALENESS:
        raise ValueError(f"{where}.staleness must be an integer in 0..{MAX_STALENESS}")


def parse(config, model="?"):
    """The TrainConfig of a parsed config.json object (dict)."""
    where = f"config.json of model {model}"
    out = TrainConfig()
    training = config.get("training", {})
    _keys(training, ["optimizer", "tensors", "non_finite", "consistency", "staleness",
                     "propagation"], f"{where}: training")
    _check_policies(training, f"{where}: training")
    out.consistency = training.get("consistency", "asp")
    out.propagation = training.get("propagation", "streaming")
    if "optimizer" in training:
        out.default = parse_optimizer(training["optimizer"], f"{where}: training.optimizer")
    tensors = training.get("tensors", {})
    if not isinstance(tensors, dict):
        raise ValueError(f"{where}: training.tensors must be an object of tensor names")
    for name, obj in tensors.items():
        out.tensors[name] = parse_optimizer(obj, f"{where}: training.tensors.{name}")
    out.non_finite = training.get("non_finite", "reject")
    if out.non_finite not in NON_FINITE:
        raise ValueError(f"{where}: training.non_finite must be \"reject\" or \"skip\", "
                         f"not {out.non_finite!r}")
    tables = config.get("tables", [])
    if not isinstance(tables, list):
        raise ValueError(f"{where}: tables must be a list")
    for i, obj in enumerate(tables):
        t = _parse_table(obj, f"{where}: tables[{i}]")
        if t.name in out.tables:
            raise ValueError(f"{where}: tables[{i}]: table {t.name!r} named twice")
        out.tables[t.name] = t
    return out
