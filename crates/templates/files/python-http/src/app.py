"""An HTTP function: ANY /fn/NAME/... passes a payload 2.0 event (as an AWS Lambda function
URL does) and the returned statusCode, headers and body become the HTTP response."""

import base64
import json


def _response(status, payload):
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(payload),
    }


def handler(event, context):
    http = event.get("requestContext", {}).get("http", {})
    method = http.get("method", "GET")
    path = event.get("rawPath", "/")
    query = event.get("queryStringParameters") or {}
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")

    if method == "POST":
        try:
            data = json.loads(body or "null")
        except ValueError as e:
            return _response(400, {"error": f"the body is not JSON: {e}"})
        return _response(201, {"received": data, "path": path})

    name = query.get("name", "world")
    return _response(200, {"message": f"Hello, {name}!", "method": method, "path": path})
