"""http-mode bootstrap for Python handlers (standard library only).

Loads the handler file named by FAAS_HANDLER (relative to FAAS_CODE_DIR),
which must define handle(req), then serves it on 127.0.0.1:FAAS_BOOTSTRAP_PORT.
The contract is documented in guest/agent/README.md.
"""

import asyncio
import http.server
import importlib.util
import inspect
import json
import os
import random
import signal
import sys
import traceback
import urllib.parse

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


def load_handler(code_dir, handler):
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
    fn = getattr(module, "handle", None)
    if not callable(fn):
        raise AttributeError(f"{path} defines no function handle(req)")
    return fn, module


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
                    asyncio.run(_awaited(result))
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


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faas-python-bootstrap"
    sys_version = ""
    # Headers and body go out in separate writes: without this, Nagle's
    # algorithm and delayed ACKs add ~40 ms to every response.
    disable_nagle_algorithm = True
    user_handle = None  # set on a subclass by serve()

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
        try:
            body = self.read_body()
        except ValueError as e:
            self.reply(400, {"Content-Type": "application/json"}, json.dumps({"error": f"bad request body: {e}"}).encode())
            self.close_connection = True
            return
        raw_path, _, query = self.path.partition("?")
        headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v
        req = Request(
            method=self.command,
            path=urllib.parse.unquote(raw_path),
            query=query,
            headers=headers,
            body=body,
            text=body.decode("utf-8", "replace"),
        )
        try:
            result = type(self).user_handle(req)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
            status, out_headers, data = to_response(result)
        except Exception as e:  # the handler's failure is the caller's 500, not the bootstrap's end
            traceback.print_exc()
            status, out_headers = 500, {"Content-Type": "application/json"}
            data = json.dumps({"error": f"{type(e).__name__}: {e}"}).encode("utf-8")
        self.reply(status, out_headers, data)

    def reply(self, status, headers, data):
        self.send_response(status)
        for k, v in headers.items():
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
    try:
        fn, module = load_handler(code_dir, handler)
    except BaseException as e:  # noqa: BLE001 - anything the import raises ends the bootstrap
        traceback.print_exc()
        print(f"bootstrap: cannot load handler {handler}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    run_dir = os.path.dirname(os.path.abspath(__file__))
    signal.signal(signal.SIGUSR2, on_restore_signal(module, run_dir))
    handler_class = type("UserHandler", (Handler,), {"user_handle": staticmethod(fn)})
    server = Server(("127.0.0.1", port), handler_class)
    print(f"bootstrap: serving {handler} on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve()
