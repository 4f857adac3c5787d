"""_wire.py: the generated protobuf and gRPC stubs (psclient/_proto/, made from
proto/ps.proto and proto/coordinator.proto by scripts/setup), imported in one place.

Why top-level names (ps_pb2, coordinator_pb2) with their folder put on sys.path, not
package-relative imports: protobuf's default descriptor pool takes each .proto file
once per process ("duplicate file name" otherwise, even for identical copies), and
other code in the same process (this project's tests) may load stubs generated from
the same files. Under the same module names every copy is one module: whichever was
imported first serves both. A copy older than what psclient needs is refused here with
a message, as is a checkout where the stubs were never generated.
"""
import os
import sys

_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_proto")
if _DIR not in sys.path:
    sys.path.append(_DIR)  # after the caller's own stub folders, if any

try:
    import coordinator_pb2 as cpb
    import coordinator_pb2_grpc as cpb_grpc
    import ps_pb2 as pb
    import ps_pb2_grpc as pb_grpc
except ImportError as e:  # pragma: no cover - a checkout without stubs
    raise ImportError(f"psclient's gRPC stubs are missing ({e}): run scripts/setup, which "
                      "generates them into ps/client/python/psclient/_proto/") from e

for _mod, _names in ((pb, ("PushRowsRequest", "PullRowsRequest", "OptimizerSpec", "TableSpec",
                            "ReplicateRequest")),
                     (cpb, ("GetModelRequest", "Ring"))):
    _missing = [n for n in _names if not hasattr(_mod, n)]
    if _missing:
        raise ImportError(f"{_mod.__name__} from {_mod.__file__} lacks {', '.join(_missing)}: "
                          "stubs generated from an older proto/ were imported first; run "
                          "scripts/setup (and regenerate those)")

__all__ = ["cpb", "cpb_grpc", "pb", "pb_grpc"]
