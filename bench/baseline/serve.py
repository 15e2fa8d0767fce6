"""The baseline's in-container entry point for Python function images: imports the function's
handler (`module.function`, the image's CMD argument) from /var/task and answers each
`POST /` with handler(event, None) as JSON on 127.0.0.1:$PORT, with keep-alive."""

import importlib
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

sys.path.insert(0, "/var/task")
MODULE, FUNCTION = sys.argv[1].rsplit(".", 1)
HANDLER = getattr(importlib.import_module(MODULE), FUNCTION)


class Invoke(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            event = json.loads(self.rfile.read(length) or b"{}")
            body, status = json.dumps(HANDLER(event, None)).encode(), 200
        except Exception as e:  # the function's failure is the answer, as on a FaaS platform
            body = json.dumps({"errorMessage": str(e), "errorType": type(e).__name__}).encode()
            status = 502
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Invoke).serve_forever()
