// An HTTP function: ANY /fn/NAME/... passes a payload 2.0 event (as an AWS Lambda function URL
// does) and the returned statusCode, headers and body become the HTTP response.
const respond = (statusCode, payload) => ({
  statusCode,
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(payload),
});

exports.handler = async (event) => {
  const method = event.requestContext?.http?.method ?? 'GET';
  const path = event.rawPath ?? '/';
  const query = event.queryStringParameters ?? {};
  let body = event.body ?? '';
  if (event.isBase64Encoded) body = Buffer.from(body, 'base64').toString('utf8');

  if (method === 'POST') {
    let data;
    try {
      data = JSON.parse(body || 'null');
    } catch (e) {
      return respond(400, { error: `the body is not JSON: ${e.message}` });
    }
    return respond(201, { received: data, path });
  }
  return respond(200, { message: `Hello, ${query.name ?? 'world'}!`, method, path });
};
