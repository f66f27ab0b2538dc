"""Schemathesis hooks for rota's admin API (loaded with SCHEMATHESIS_HOOKS=rota_hooks).

Every operation is tested with every check, against a live node that the run may drain,
pause, reconfigure and command. One thing is kept out: requests that would stop or restart
the node serving the API (ROTA_SERVING_NODE), which would end the run itself. Restarting or
stopping any other node, live or not, stays in.

A definitions document is TOML, which the OpenAPI document cannot describe: a generated
string is replaced by one of two valid documents (none, or one harmless task), so that
applying definitions is tested beyond the parse error every random string gets.
"""
import os

import schemathesis

SERVING = os.environ.get("ROTA_SERVING_NODE", "node-1")
STOPPING_OPS = {"restart", "shutdown", "rolling_restart"}


def _spares_serving(nodes):
    """A list of nodes that leaves the serving node out; anything else may include it."""
    return isinstance(nodes, list) and SERVING not in nodes


DOCUMENTS = [
    "",
    '[[task]]\nname = "st-defined"\nevery = "1h"\nlog = { message = "defined by schemathesis" }\n',
]


@schemathesis.hook
def map_body(ctx, body):
    operation = getattr(ctx, "operation", None)
    is_apply = (
        operation is not None
        and operation.path == "/api/v1/definitions"
        and operation.method.upper() == "POST"
    )
    if is_apply and isinstance(body, dict) and isinstance(body.get("document"), str):
        body["document"] = DOCUMENTS[len(body["document"]) % 2]
    return body


RUN = os.environ.get("ROTA_RUN", "")
FIRE = os.environ.get("ROTA_FIRE", "")


@schemathesis.hook
def map_path_parameters(ctx, params):
    """A run or a fire that exists for reads of one; only for a well-formed number, so that
    a malformed one is still sent, and refused."""
    operation = getattr(ctx, "operation", None)
    path = operation.path if operation is not None else ""
    # The parameter that names one record, and the record that exists: a run (ROTA_RUN,
    # `task/seq`) or a fire (ROTA_FIRE, `task/instant`).
    known = {
        "/api/v1/tasks/{name}/runs/{seq}": ("seq", RUN),
        "/api/v1/tasks/{name}/fires/{instant}/output": ("instant", FIRE),
    }.get(path)
    if known and known[1] and isinstance(params, dict):
        key, record = known
        value = params.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            name, number = record.split("/")
            params["name"] = name
            params[key] = int(number)
    return params


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
