"""psclient: the parameter servers' client for Python training scripts.

    import psclient
    with psclient.Client() as c:              # coordinator: arg, $PS_COORDINATOR, or
        print(c.models())                     # COORDINATOR= in run/cluster.env
        w = c.pull("digits_mlp", "fc1.weight")
        c.push("digits_mlp", "fc1.weight", grad)

Keys and placement match the C side bit for bit (keys.py, ring.py); see client.py for
the operations and routing.py for how requests reach the shards.
"""
from .client import Client
from .errors import Error
from .keys import key_dense, key_row
from .ring import Ring
from .routing import new_request_id

__all__ = ["Client", "Error", "Ring", "key_dense", "key_row", "new_request_id"]
