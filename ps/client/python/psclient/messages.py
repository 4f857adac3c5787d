"""messages.py: the train_config values as ps.proto messages (OptimizerSpec, TableSpec),
and float arrays as the raw little-endian float32 bytes the `values` fields carry.
"""
import numpy as np

from ._wire import pb

OPTIMIZER_KINDS = {"sgd": pb.OPT_SGD, "adagrad": pb.OPT_ADAGRAD, "adam": pb.OPT_ADAM,
                   "ftrl": pb.OPT_FTRL}
INIT_KINDS = {"zeros": pb.INIT_ZEROS, "uniform": pb.INIT_UNIFORM, "normal": pb.INIT_NORMAL}
F32 = np.dtype("<f4")


def optimizer_spec(opt):
    """pb.OptimizerSpec of a train_config.Optimizer (None: OPT_NONE)."""
    if opt is None:
        return pb.OptimizerSpec(kind=pb.OPT_NONE)
    return pb.OptimizerSpec(kind=OPTIMIZER_KINDS[opt.kind], **opt.params)


def table_spec(table):
    """pb.TableSpec of a train_config.Table."""
    kind = OPTIMIZER_KINDS[table.optimizer.kind] if table.optimizer else pb.OPT_NONE
    return pb.TableSpec(dim=table.dim, init=INIT_KINDS[table.init], init_scale=table.init_scale,
                        seed=table.seed, optimizer=kind)


def floats(values, what):
    """values as a C-contiguous little-endian float32 array (a view when it already is
    one); ValueError when they are not numbers."""
    try:
        return np.ascontiguousarray(values, dtype=F32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: not an array of numbers ({e})") from None


def check_finite(a, what, why=""):
    """ValueError naming the first NaN or infinity of a (and why it is refused)."""
    bad = np.flatnonzero(~np.isfinite(a.reshape(-1)))
    if len(bad):
        raise ValueError(f"{what} holds a NaN or infinity (first at flat index {int(bad[0])})"
                         f"{why}")
