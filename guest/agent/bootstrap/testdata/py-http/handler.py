# A handler written to OpenFaaS's python3-http contract (our own test file).
def handle(event, context):
    if event.path == "/teapot":
        return {"statusCode": 418, "body": "short and stout", "headers": {"Content-Type": "text/plain"}}
    if event.path == "/none":
        return None
    return {
        "statusCode": 201,
        "headers": {"X-Handler": "python3-http"},
        "body": {
            "method": event.method,
            "path": event.path,
            "name": event.query.get("name"),
            "all": event.query.getlist("name"),
            "body": event.body.decode(),
            "bodyType": type(event.body).__name__,
            "ctype": event.headers.get("content-type"),
            "hostname": bool(context.hostname),
        },
    }
