'use strict';
// A handler written to OpenFaaS's node20 contract (our own test file).
module.exports = async (event, context) => {
  if (event.path === '/fail') {
    return context.status(503).fail('out of coffee');
  }
  if (event.path === '/text') {
    return context.status(200).succeed('plain ' + event.method);
  }
  return context
    .status(202)
    .headers({ 'X-Handler': 'node20' })
    .succeed({ method: event.method, path: event.path, query: event.query, body: event.body, bodyType: typeof event.body });
};
