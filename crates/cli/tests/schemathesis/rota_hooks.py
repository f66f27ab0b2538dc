"""Schemathesis hooks for rota's admin API (loaded with SCHEMATHESIS_HOOKS=rota_hooks).

Every operation is tested with every check, against a live node that the run may drain,
pause, reconfigure and command. One thing is kept out: requests that would stop or restart
the node serving the API (ROTA_SERVING_NODE), which would end the run itself. Restarting or
stopping any other node, live or not, stays in.
"""
import os

import schemathesis

SERVING = os.environ.get("ROTA_SERVING_NODE", "node-1")
STOPPING_OPS = {"restart", "shutdown", "rolling_restart"}


def _spares_serving(nodes):
    """A list of nodes that leaves the serving node out; anything else may include it."""
    return isinstance(nodes, list) and SERVING not in nodes


@schemathesis.hook
def filter_case(ctx, case):
    path = case.operation.path
    body = case.body if isinstance(case.body, dict) else {}
    if path in ("/api/v1/nodes/{id}/restart", "/api/v1/nodes/{id}/shutdown"):
        return (case.path_parameters or {}).get("id") != SERVING
    if path == "/api/v1/rolling-restart":
        return _spares_serving(body.get("nodes"))
    op = body.get("op")
    if path == "/api/v1/commands" and isinstance(op, str) and op in STOPPING_OPS:
        scope = body.get("scope", "cluster")
        return isinstance(scope, dict) and _spares_serving(scope.get("nodes"))
    return True
