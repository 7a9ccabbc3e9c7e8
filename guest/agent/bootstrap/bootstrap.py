"""http-mode bootstrap for Python handlers (standard library only).

Loads the handler file named by FAAS_HANDLER (relative to FAAS_CODE_DIR)
and serves the function FAAS_FUNCTION ("handle" when unset) it defines on
127.0.0.1:FAAS_BOOTSTRAP_PORT, called by the contract FAAS_TEMPLATE names:

  faasvm         handle(req): our own (see guest/agent/README.md)
  openfaas-http  OpenFaaS python3-http / python3-flask: handle(event, context)
                 (or python3-flask's handle(req) with the body as text)
  lambda         AWS Lambda: fn(event, context) with an API Gateway HTTP API
                 (payload 2.0) event

A faasvm handler whose handle takes two required arguments is served as
openfaas-http. FAAS_FUNCTION_NAME, FAAS_MEMORY_MB and FAAS_TIMEOUT_MS feed
the Lambda context.
"""

import base64
import http.server
import importlib.util
import inspect
import json
import os
import random
import signal
import sys
import time
import traceback
import urllib.parse
import uuid

# Response headers the bootstrap computes itself.
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection"}


class Request(dict):
    """The request given to handle(req): a dict that also reads as attributes.

    Keys: method, path (percent-decoded), query (raw, without '?'),
    headers (lower-cased names), body (bytes), text (body decoded as UTF-8).
    """

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def json(self):
        """The body parsed as JSON (None for an empty body)."""
        return json.loads(self["body"]) if self["body"] else None


def load_handler(code_dir, handler, function="handle"):
    path = handler if os.path.isabs(handler) else os.path.join(code_dir, handler)
    if not path.endswith(".py") and not os.path.exists(path):
        path += ".py"
    name = os.path.splitext(os.path.basename(path))[0]
    for d in (code_dir, os.path.dirname(path)):
        if d not in sys.path:
            sys.path.insert(0, d)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    fn = getattr(module, function, None)
    if not callable(fn):
        args = "req" if function == "handle" else "event, context"
        raise AttributeError(f"{path} defines no function {function}({args})")
    if inspect.iscoroutinefunction(fn):
        _asyncio()  # imported before the handler is reported ready, not in its first call
    return fn, module


def _asyncio():
    """Imports asyncio only for async handlers and hooks: under TCG, just
    after boot, importing it takes seconds (BenchmarkPythonImports), half
    of a sync handler's start-up."""
    import asyncio

    return asyncio


def on_restore_signal(module, run_dir):
    """Returns the SIGUSR2 handler the agent triggers after a snapshot restore.

    The kernel's RNG has been reseeded by then: reseed Python's own PRNG from
    it, call the handler module's optional on_restore(info) hook (info: name,
    vmId), then confirm by writing restore-<n>.done (empty, or the hook's
    error), which the agent waits for before the clone serves.
    """

    def handler(signum, frame):
        err = ""
        n = 0
        try:
            with open(os.path.join(run_dir, "restore.json"), encoding="utf-8") as f:
                info = json.load(f)
            n = int(info.get("n", 0))
            random.seed()  # from os.urandom: the reseeded kernel RNG
            hook = getattr(module, "on_restore", None)
            if callable(hook):
                result = hook({"name": info.get("name", ""), "vmId": info.get("vmId", "")})
                if inspect.isawaitable(result):
                    _asyncio().run(_awaited(result))
        except Exception as e:  # noqa: BLE001 - a failing hook is reported, the clone serves anyway
            traceback.print_exc()
            err = f"on_restore: {type(e).__name__}: {e}"
        done = os.path.join(run_dir, f"restore-{n}.done")
        with open(done + ".tmp", "w", encoding="utf-8") as f:
            f.write(err)
        os.replace(done + ".tmp", done)

    return handler


def _has(headers, name):
    return any(k.lower() == name for k in headers)


def encode_body(body, headers):
    """Renders body as bytes, adding a Content-Type to headers if it has none."""
    if body is None:
        return b""
    if isinstance(body, str):
        ctype, data = "text/plain; charset=utf-8", body.encode("utf-8")
    elif isinstance(body, (bytes, bytearray, memoryview)):
        ctype, data = "application/octet-stream", bytes(body)
    else:
        ctype, data = "application/json", json.dumps(body).encode("utf-8")
    if not _has(headers, "content-type"):
        headers["Content-Type"] = ctype
    return data


def to_response(result):
    """Maps a handler's return value to (status, headers, body bytes)."""
    if isinstance(result, tuple):
        if len(result) == 2:
            status, headers, body = result[0], {}, result[1]
        elif len(result) == 3:
            status, headers, body = result
        else:
            raise ValueError("a tuple result is (status, body) or (status, headers, body)")
    elif isinstance(result, dict) and "statusCode" in result:
        status, headers, body = result["statusCode"], result.get("headers") or {}, result.get("body")
    else:
        status, headers, body = 200, {}, result
    status = int(status)
    if not 100 <= status <= 599:
        raise ValueError(f"status code {status} is not between 100 and 599")
    headers = {str(k): str(v) for k, v in dict(headers).items()}
    return status, headers, encode_body(body, headers)


async def _awaited(awaitable):
    return await awaitable


def call(fn, *args):
    """Calls fn, running it to completion when it is a coroutine function."""
    result = fn(*args)
    if inspect.isawaitable(result):
        result = _asyncio().run(_awaited(result))
    return result


def required_args(fn):
    """How many positional arguments fn requires (None when unknown)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    return sum(
        1
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    )


class Raw:
    """One HTTP request as the bootstrap read it, before any contract shapes it."""

    def __init__(self, method, target, header_items, body, started):
        self.method = method
        self.raw_path, _, self.query = target.partition("?")
        self.path = urllib.parse.unquote(self.raw_path)
        self.header_items = header_items  # [(name as sent, value)]
        self.headers = {}  # lower-cased name -> values joined with ", "
        for k, v in header_items:
            k = k.lower()
            self.headers[k] = self.headers[k] + ", " + v if k in self.headers else v
        self.body = body
        self.started = started


def faasvm_contract(fn):
    """Our own contract: handle(req) with a Request, see to_response."""

    def serve(raw):
        req = Request(
            method=raw.method,
            path=raw.path,
            query=raw.query,
            headers=raw.headers,
            body=raw.body,
            text=raw.body.decode("utf-8", "replace"),
        )
        status, headers, data = to_response(call(fn, req))
        return status, list(headers.items()), data

    return serve


# --- OpenFaaS python3-http / python3-flask ---------------------------------


class Headers(dict):
    """Request headers as Flask's request.headers reads them: names in
    Title-Case, looked up without regard to case."""

    def __init__(self, items):
        super().__init__()
        for k, v in items:
            k = "-".join(w.capitalize() for w in k.split("-"))
            super().__setitem__(k, self[k] + ", " + v if k in self else v)

    def _key(self, name):
        for k in dict.keys(self):
            if k.lower() == str(name).lower():
                return k
        return name

    def __getitem__(self, name):
        return dict.__getitem__(self, self._key(name))

    def __contains__(self, name):
        return dict.__contains__(self, self._key(name))

    def get(self, name, default=None, type=None):  # noqa: A002 - werkzeug's signature
        if name not in self:
            return default
        v = self[name]
        return type(v) if type is not None else v


class Query(dict):
    """The query string as Flask's request.args reads it: [name] and
    get(name) give the first value, getlist(name) all of them."""

    def __init__(self, raw):
        super().__init__()
        self._all = {}
        for k, v in urllib.parse.parse_qsl(raw, keep_blank_values=True):
            self._all.setdefault(k, []).append(v)
            if k not in self:
                super().__setitem__(k, v)

    def get(self, name, default=None, type=None):  # noqa: A002 - werkzeug's signature
        if name not in self:
            return default
        v = self[name]
        return type(v) if type is not None else v

    def getlist(self, name):
        return list(self._all.get(name, []))

    def to_dict(self, flat=True):
        return dict(self) if flat else {k: list(v) for k, v in self._all.items()}


class Event:
    """python3-http's event: body (bytes), headers, method, query, path."""

    def __init__(self, raw):
        self.body = raw.body
        self.headers = Headers(raw.header_items)
        self.method = raw.method
        self.query = Query(raw.query)
        self.path = raw.path


class Context:
    """python3-http's context."""

    def __init__(self):
        self.hostname = os.environ.get("HOSTNAME", "localhost")


def jsonify(value):
    """Flask's jsonify: compact, sorted keys, a trailing newline."""
    return (json.dumps(value, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


def header_list(headers):
    if headers is None:
        return []
    if isinstance(headers, dict):
        headers = headers.items()
    return [(str(k), str(v)) for k, v in headers]


def _has_item(items, name):
    return any(k.lower() == name for k, _ in items)


def flask_response(rv):
    """Maps a Flask view's return value to (status, header list, bytes):
    body, (body, status), (body, headers) or (body, status, headers); str
    and bytes bodies are text/html, dicts and lists JSON."""
    status, headers = 200, None
    if isinstance(rv, tuple):
        if len(rv) == 3:
            rv, status, headers = rv
        elif len(rv) == 2:
            rv, extra = rv
            if isinstance(extra, (dict, list)):
                headers = extra
            else:
                status = extra
        else:
            raise ValueError("a tuple result is (body, status), (body, headers) or (body, status, headers)")
    if isinstance(status, str):
        status = status.split(" ", 1)[0]
    status = int(status)
    if not 100 <= status <= 599:
        raise ValueError(f"status code {status} is not between 100 and 599")
    items = header_list(headers)
    if rv is None:
        data, ctype = b"", "text/html; charset=utf-8"
    elif isinstance(rv, (dict, list)):
        data, ctype = jsonify(rv), "application/json"
    elif isinstance(rv, str):
        data, ctype = rv.encode("utf-8"), "text/html; charset=utf-8"
    elif isinstance(rv, (bytes, bytearray, memoryview)):
        data, ctype = bytes(rv), "text/html; charset=utf-8"
    else:
        raise TypeError(f"the handler returned a {type(rv).__name__}: return a str, bytes, dict, list or tuple")
    if not _has_item(items, "content-type"):
        items.append(("Content-Type", ctype))
    return status, items, data


def format_response(res):
    """python3-http's format_response: a dict with statusCode, body and
    headers (a dict body as JSON), anything else as Flask takes it."""
    if res is None:
        return ("", 200)
    if not isinstance(res, dict):
        return res
    status = res.get("statusCode", 200)
    headers = res.get("headers") or {}
    ctype = headers.get("Content-type", "") if isinstance(headers, dict) else ""
    if ctype == "application/octet-stream":
        body = res.get("body", b"")
    elif "body" not in res or res["body"] is None:
        body = ""
    elif isinstance(res["body"], (dict, list, bytes, bytearray)):
        body = res["body"]
    else:
        body = str(res["body"])
    return (body, status, headers)


def openfaas_http_contract(fn):
    """OpenFaaS python3-http: handle(event, context); python3-flask's
    handle(req) gets the body as text (bytes when RAW_BODY=true)."""
    two = required_args(fn) != 1

    def serve(raw):
        if two:
            return flask_response(format_response(call(fn, Event(raw), Context())))
        raw_body = os.environ.get("RAW_BODY", "").lower() in ("1", "true", "yes")
        req = raw.body if raw_body else raw.body.decode("utf-8", "replace")
        return flask_response(call(fn, req))

    return serve


# --- AWS Lambda (API Gateway HTTP API, payload format 2.0) ------------------


class LambdaContext:
    """The Lambda context object: request id, function name, memory, time left."""

    def __init__(self, request_id, deadline):
        name = os.environ.get("FAAS_FUNCTION_NAME", "function")
        self.aws_request_id = request_id
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{name}"
        self.memory_limit_in_mb = int(os.environ.get("FAAS_MEMORY_MB") or 0)
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "faasvm/" + os.environ.get("HOSTNAME", "vm")
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def lambda_event(raw, request_id, now):
    """The API Gateway HTTP API (payload 2.0) event of one request."""
    headers = {k: v.replace(", ", ",") if k != "cookie" else v for k, v in raw.headers.items()}
    cookie = headers.pop("cookie", "")
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw.raw_path,
        "rawQueryString": raw.query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "faasvm",
            "domainName": headers.get("host", "localhost"),
            "domainPrefix": headers.get("host", "localhost").split(".", 1)[0],
            "http": {
                "method": raw.method,
                "path": raw.path,
                "protocol": "HTTP/1.1",
                "sourceIp": headers.get("x-forwarded-for", "127.0.0.1").split(",", 1)[0].strip(),
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookie:
        event["cookies"] = [c.strip() for c in cookie.replace(",", ";").split(";") if c.strip()]
    params = {}
    for k, v in urllib.parse.parse_qsl(raw.query, keep_blank_values=True):
        params[k] = params[k] + "," + v if k in params else v
    if params:
        event["queryStringParameters"] = params
    if raw.body:
        try:
            event["body"] = raw.body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(raw.body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


def lambda_response(result):
    """Maps a Lambda result to (status, header list, bytes) the way API
    Gateway does for payload 2.0: a dict with statusCode is the response
    (headers, cookies, body, isBase64Encoded); anything else is a 200 JSON
    body (a str as it is)."""
    if isinstance(result, dict) and "statusCode" in result:
        status = int(result["statusCode"])
        if not 100 <= status <= 599:
            raise ValueError(f"statusCode {status} is not between 100 and 599")
        items = header_list(result.get("headers") or {})
        for c in result.get("cookies") or []:
            items.append(("Set-Cookie", str(c)))
        body = result.get("body")
        if body is None:
            data = b""
        elif result.get("isBase64Encoded"):
            data = base64.b64decode(body)
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:
            data = json.dumps(body).encode("utf-8")
        if not _has_item(items, "content-type"):
            items.append(("Content-Type", "application/json" if isinstance(body, (dict, list)) else "text/plain; charset=utf-8"))
        return status, items, data
    if isinstance(result, str):
        data = result.encode("utf-8")
    elif result is None:
        data = b""
    else:
        data = json.dumps(result).encode("utf-8")
    return 200, [("Content-Type", "application/json")], data


def lambda_contract(fn):
    timeout = int(os.environ.get("FAAS_TIMEOUT_MS") or 0) / 1000
    name = os.environ.get("FAAS_FUNCTION_NAME", "function")
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", name)
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", os.environ.get("FAAS_MEMORY_MB") or "0")

    def serve(raw):
        request_id = raw.headers.get("x-request-id") or str(uuid.uuid4())
        event = lambda_event(raw, request_id, time.time())
        ctx = LambdaContext(request_id, raw.started + (timeout or 300))
        return lambda_response(call(fn, event, ctx))

    return serve


CONTRACTS = {"faasvm": faasvm_contract, "openfaas-http": openfaas_http_contract, "lambda": lambda_contract}


def contract_for(template, fn):
    """The serve(raw) function of template ("" is faasvm); a faasvm handle
    that needs two arguments is python3-http's."""
    template = template or "faasvm"
    if template not in CONTRACTS:
        raise ValueError(f"unknown handler contract {template!r} (want one of {', '.join(CONTRACTS)})")
    if template == "faasvm" and required_args(fn) == 2:
        template = "openfaas-http"
    return CONTRACTS[template](fn)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faas-python-bootstrap"
    sys_version = ""
    # Headers and body go out in separate writes: without this, Nagle's
    # algorithm and delayed ACKs add ~40 ms to every response.
    disable_nagle_algorithm = True
    serve_request = None  # serve(raw) of the handler's contract, set on a subclass by serve()

    def __getattr__(self, name):
        # BaseHTTPRequestHandler calls do_<METHOD>: every method goes to dispatch.
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass  # the agent logs; one line per request on the console is noise

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(65537).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # the CRLF closing the chunk
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def dispatch(self):
        started = time.monotonic()
        try:
            body = self.read_body()
        except ValueError as e:
            self.reply(400, [("Content-Type", "application/json")], json.dumps({"error": f"bad request body: {e}"}).encode())
            self.close_connection = True
            return
        raw = Raw(self.command, self.path, list(self.headers.items()), body, started)
        try:
            status, out_headers, data = type(self).serve_request(raw)
        except Exception as e:  # the handler's failure is the caller's 500, not the bootstrap's end
            traceback.print_exc()
            status, out_headers = 500, [("Content-Type", "application/json")]
            data = json.dumps({"error": f"{type(e).__name__}: {e}"}).encode("utf-8")
        self.reply(status, out_headers, data)

    def reply(self, status, headers, data):
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in _HOP_HEADERS:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def serve():
    port = int(os.environ["FAAS_BOOTSTRAP_PORT"])
    code_dir = os.environ.get("FAAS_CODE_DIR") or os.getcwd()
    handler = os.environ["FAAS_HANDLER"]
    function = os.environ.get("FAAS_FUNCTION") or "handle"
    try:
        fn, module = load_handler(code_dir, handler, function)
        contract = contract_for(os.environ.get("FAAS_TEMPLATE", ""), fn)
    except BaseException as e:  # noqa: BLE001 - anything the import raises ends the bootstrap
        traceback.print_exc()
        print(f"bootstrap: cannot load handler {handler}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    run_dir = os.path.dirname(os.path.abspath(__file__))
    signal.signal(signal.SIGUSR2, on_restore_signal(module, run_dir))
    handler_class = type("UserHandler", (Handler,), {"serve_request": staticmethod(contract)})
    server = Server(("127.0.0.1", port), handler_class)
    print(f"bootstrap: serving {handler}:{function} ({os.environ.get('FAAS_TEMPLATE') or 'faasvm'} contract) on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve()
