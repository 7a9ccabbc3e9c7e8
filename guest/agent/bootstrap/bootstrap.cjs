'use strict';
// http-mode bootstrap for Node.js handlers (core modules only).
//
// Loads the handler file named by FAAS_HANDLER (relative to FAAS_CODE_DIR),
// which must export a function (module.exports = async (req) => ...,
// module.exports.handle, or an ES module's default export or named `handle`),
// then serves it on 127.0.0.1:FAAS_BOOTSTRAP_PORT. The contract is
// documented in guest/agent/README.md.

const http = require('node:http');
const path = require('node:path');
const { pathToFileURL } = require('node:url');

// Response headers the bootstrap computes itself.
const HOP_HEADERS = new Set(['content-length', 'transfer-encoding', 'connection']);

async function loadHandler(codeDir, handler) {
  const file = path.resolve(codeDir, handler);
  let mod;
  if (file.endsWith('.mjs')) {
    mod = await import(pathToFileURL(file).href);
  } else {
    try {
      mod = require(file);
    } catch (err) {
      if (err && err.code === 'ERR_REQUIRE_ESM') {
        mod = await import(pathToFileURL(file).href);
      } else {
        throw err;
      }
    }
  }
  const candidates = [mod, mod && mod.handle, mod && mod.default, mod && mod.default && mod.default.handle];
  const fn = candidates.find((c) => typeof c === 'function');
  if (!fn) {
    throw new Error(`${file} exports no function: use module.exports = async (req) => ... or module.exports.handle = ...`);
  }
  return fn;
}

function isBytes(v) {
  return Buffer.isBuffer(v) || v instanceof Uint8Array;
}

// encodeBody renders body as a Buffer, adding a content-type to headers (lower-cased keys) if it has none.
function encodeBody(body, headers) {
  if (body === undefined || body === null) {
    return Buffer.alloc(0);
  }
  let ctype;
  let data;
  if (typeof body === 'string') {
    ctype = 'text/plain; charset=utf-8';
    data = Buffer.from(body, 'utf8');
  } else if (isBytes(body)) {
    ctype = 'application/octet-stream';
    data = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  } else {
    ctype = 'application/json';
    const js = JSON.stringify(body);
    if (js === undefined) {
      throw new TypeError(`cannot encode a ${typeof body} as JSON`);
    }
    data = Buffer.from(js, 'utf8');
  }
  if (!('content-type' in headers)) {
    headers['content-type'] = ctype;
  }
  return data;
}

// toResponse maps a handler's return value to {status, headers, data}.
function toResponse(result) {
  let status = 200;
  let headers = {};
  let body = result;
  if (result !== null && typeof result === 'object' && !isBytes(result) && 'statusCode' in result) {
    status = Number(result.statusCode);
    headers = result.headers || {};
    body = result.body;
  }
  if (!Number.isInteger(status) || status < 100 || status > 599) {
    throw new RangeError(`status code ${result.statusCode} is not an integer between 100 and 599`);
  }
  const out = {};
  for (const [k, v] of Object.entries(headers)) {
    if (!HOP_HEADERS.has(k.toLowerCase())) {
      out[k.toLowerCase()] = v;
    }
  }
  return { status, headers: out, data: encodeBody(body, out) };
}

function errorText(err) {
  if (err instanceof Error) {
    return `${err.name}: ${err.message}`;
  }
  return String(err);
}

function makeRequest(req, body) {
  const q = req.url.indexOf('?');
  const rawPath = q >= 0 ? req.url.slice(0, q) : req.url;
  let decoded = rawPath;
  try {
    decoded = decodeURIComponent(rawPath);
  } catch {
    // keep the raw path when it is not valid percent-encoding
  }
  return {
    method: req.method,
    path: decoded,
    query: q >= 0 ? req.url.slice(q + 1) : '',
    headers: req.headers,
    body,
    text: body.toString('utf8'),
  };
}

async function main() {
  const port = Number(process.env.FAAS_BOOTSTRAP_PORT);
  const codeDir = process.env.FAAS_CODE_DIR || process.cwd();
  const handler = process.env.FAAS_HANDLER;
  let fn;
  try {
    fn = await loadHandler(codeDir, handler);
  } catch (err) {
    console.error(err);
    console.error(`bootstrap: cannot load handler ${handler}: ${errorText(err)}`);
    process.exit(1);
  }

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('error', () => res.destroy());
    req.on('end', async () => {
      let resp;
      try {
        resp = toResponse(await fn(makeRequest(req, Buffer.concat(chunks))));
      } catch (err) {
        console.error(err);
        resp = {
          status: 500,
          headers: { 'content-type': 'application/json' },
          data: Buffer.from(JSON.stringify({ error: errorText(err) }), 'utf8'),
        };
      }
      resp.headers['content-length'] = resp.data.length;
      try {
        res.writeHead(resp.status, resp.headers);
        res.end(req.method === 'HEAD' ? undefined : resp.data);
      } catch (err) {
        // e.g. a header value Node refuses to send
        console.error(err);
        if (res.headersSent) {
          res.destroy();
          return;
        }
        const data = Buffer.from(JSON.stringify({ error: errorText(err) }), 'utf8');
        res.writeHead(500, { 'content-type': 'application/json', 'content-length': data.length });
        res.end(data);
      }
    });
  });
  // The agent's proxy owns the connections: it closes idle ones and bounds
  // each invocation, so Node's own timeouts are off.
  server.keepAliveTimeout = 0;
  server.requestTimeout = 0;
  server.listen(port, '127.0.0.1', () => {
    console.log(`bootstrap: serving ${handler} on 127.0.0.1:${port}`);
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
