"""Echo: answers with the request it received, as JSON.

http mode: the guest agent imports this file once and calls handle(req) per
request. req is a dict with method, path, query, headers, body (bytes) and
text (the body decoded as UTF-8). Returning a dict without "statusCode"
makes the agent answer 200 with that dict as JSON.
"""
from urllib.parse import parse_qs


def _params(query):
    # Accept the raw query string ("a=1&b=2") as well as an already parsed
    # mapping.
    if isinstance(query, dict):
        return query
    return parse_qs(query or "", keep_blank_values=True)


def handle(req):
    return {
        "method": req.get("method"),
        "path": req.get("path"),
        "query": req.get("query"),
        "params": _params(req.get("query")),
        "headers": dict(req.get("headers") or {}),
        "body": req.get("text", ""),
        "bodyLength": len(req.get("body") or b""),
    }
