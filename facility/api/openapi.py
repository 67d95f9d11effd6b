"""Every operation documents the errors every operation can give, in the API's one error body.

drf-spectacular documents what a view declares; the rest come from the layers around every view (the
authentication classes, the role permissions, validation of query and body, DRF's parsers, the
fault middleware). Declaring them per view would repeat the same lines in every app, so this
post-processing hook adds whichever are missing: 401 and 403 and 503 everywhere, 400 where the operation
takes query parameters or a body, 404 where the path names an object, 415 where it takes a body.
"""

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "item": {"type": "string", "description": "JSON path or query parameter"},
            "line": {"type": "integer", "description": "line of an exposition text"},
            "reason": {"type": "string"}}, "required": ["reason"]}},
        "reasons": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["code", "message"],
}
DESCRIPTIONS = {
    "400": "Invalid query parameters or body; `errors` names each problem.",
    "401": "No credentials, or an unknown, expired or revoked token.",
    "403": "Signed in, but without the permission this needs.",
    "404": "No such object.",
    "415": "Unsupported content type.",
    "503": "A part FuseDC needs is down; nothing was accepted. Retry after `Retry-After` seconds.",
}
BODY_METHODS = {"post", "put", "patch"}


def add_error_responses(result, generator, request, public):
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Error", ERROR_SCHEMA)
    ref = {"$ref": "#/components/schemas/Error"}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            params = operation.get("parameters", [])
            codes = ["401", "403", "503"]
            if method in BODY_METHODS or any(p.get("in") == "query" for p in params):
                codes.append("400")
            if any(p.get("in") == "path" for p in params):
                codes.append("404")
            if method in BODY_METHODS:
                codes.append("415")
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(code, {"description": DESCRIPTIONS[code],
                                            "content": {"application/json": {"schema": ref}}})
    return result
