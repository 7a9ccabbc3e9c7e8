'use strict';
// An AWS Lambda handler (API Gateway HTTP API, payload 2.0; our own test file).
exports.handler = async (event, context) => {
  if (event.rawPath === '/binary') {
    return { statusCode: 200, headers: { 'content-type': 'application/octet-stream' }, body: Buffer.from([0, 1, 2]).toString('base64'), isBase64Encoded: true };
  }
  return {
    statusCode: 200,
    headers: { 'content-type': 'application/json', 'x-handler': 'lambda-node' },
    body: JSON.stringify({
      version: event.version,
      method: event.requestContext.http.method,
      rawPath: event.rawPath,
      query: event.queryStringParameters || null,
      body: event.body || '',
      requestId: context.awsRequestId,
      function: context.functionName,
      memory: context.memoryLimitInMB,
      remaining: context.getRemainingTimeInMillis(),
    }),
  };
};
