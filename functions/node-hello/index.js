// node-hello: greets whoever ?name= says, as JSON.
//
// http mode: the guest agent loads this module once and calls the exported
// function per request with {method, path, query, headers, body, text}.
// Returning {statusCode, headers, body} sets the whole response.
'use strict';

function nameFrom(query) {
  if (query && typeof query === 'object') {
    const v = query.name;
    return Array.isArray(v) ? v[0] : v;
  }
  return new URLSearchParams(query || '').get('name');
}

module.exports = async (req) => {
  const name = nameFrom(req.query) || 'World';
  return {
    statusCode: 200,
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ greeting: `Hello, ${name}!`, runtime: `node ${process.version}` }),
  };
};
