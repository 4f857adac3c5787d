"""errors.py: psclient.Error, what the client raises for everything that is not a bad
argument caught locally (those are ValueError): a status from a shard or the
coordinator, with its gRPC code and the server's message, or no coordinator to talk to.
"""


class Error(Exception):
    """A failure the client could not handle.

    code: the grpc.StatusCode of the answer (None when no server was asked, e.g. no
    coordinator address was found); details: the server's own message; str(error) says
    which server (shard id and address, or the coordinator) and what was asked."""

    def __init__(self, message, code=None, details=""):
        super().__init__(message)
        self.code = code
        self.details = details
