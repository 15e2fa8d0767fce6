"""A test bootstrap for strata-init: a Lambda Runtime API client with scripted behaviours.

Usage: python3 -u bootstrap.py MODE (in generic mode, the handler is the mode). Standard library
only (http.client), like a real runtime.
"""

import http.client
import json
import os
import subprocess
import sys
import time

API = "/2018-06-01/runtime"
conn = http.client.HTTPConnection(os.environ["AWS_LAMBDA_RUNTIME_API"])


def request(method, path, body=None, headers=None):
    conn.request(method, API + path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()


def next_invocation():
    status, headers, body = request("GET", "/invocation/next")
    assert status == 200, status
    return headers["Lambda-Runtime-Aws-Request-Id"], headers, body


def respond(rid, payload, content_type="application/json"):
    return request("POST", "/invocation/%s/response" % rid, payload, {"Content-Type": content_type})[0]


def echo():
    while True:
        rid, headers, body = next_invocation()
        print("handling", rid)
        print("to stderr", file=sys.stderr)
        out = {"event": json.loads(body), "headers": headers, "env": dict(os.environ), "cwd": os.getcwd()}
        respond(rid, json.dumps(out).encode())


def error():
    while True:
        rid, _, _ = next_invocation()
        err = {"errorMessage": "boom", "errorType": "Custom.Boom", "stackTrace": ["a", "b"]}
        status, _, _ = request(
            "POST",
            "/invocation/%s/error" % rid,
            json.dumps(err).encode(),
            {
                "Content-Type": "application/vnd.aws.lambda.error+json",
                "Lambda-Runtime-Function-Error-Type": "Custom.Boom",
            },
        )
        print("error status", status)


def init_error():
    err = {"errorMessage": "cannot import handler", "errorType": "Runtime.ImportModuleError"}
    status, _, _ = request(
        "POST",
        "/init/error",
        json.dumps(err).encode(),
        {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"},
    )
    print("init error status", status)
    sys.exit(7)


def sleep():
    child = subprocess.Popen(["sleep", "60"])
    print("PIDS", os.getpid(), child.pid)
    next_invocation()
    time.sleep(60)


def flood():
    while True:
        rid, _, body = next_invocation()
        if json.loads(body).get("flood"):
            line = "x" * 99 + "\n"
            for _ in range(100):  # 100 x 1000 lines x 100 bytes = 10 MB
                sys.stdout.write(line * 1000)
            sys.stdout.flush()
        else:
            print("quiet invocation")
        respond(rid, b'"done"')


def exit_mid():
    next_invocation()
    print("leaving now")
    sys.exit(3)


def probe():
    rid, _, _ = next_invocation()
    first = respond(rid, b'"first"')
    second = respond(rid, b'"second"')
    unknown = respond("no-such-id", b'"x"')
    bad_error = request("POST", "/invocation/no-such-id/error", b"{}")[0]
    late_init_error = request("POST", "/init/error", b"{}")[0]
    missing = request("GET", "/2018-06-01/runtime/nothing")[0]
    print("STATUS", json.dumps({
        "first": first, "second": second, "unknown": unknown, "bad_error": bad_error,
        "late_init_error": late_init_error, "missing": missing,
    }))
    rid, _, _ = next_invocation()
    big = respond(rid, b"x" * (6 * 1024 * 1024 + 1))
    after = respond(rid, b'"small"')
    print("STATUS", json.dumps({"big": big, "after": after}))
    rid, _, _ = next_invocation()
    print("STATUS", json.dumps({"ok": respond(rid, b'"still alive"')}))
    next_invocation()


def slow():
    print("loaded", os.getpid())
    while True:
        rid, _, _ = next_invocation()
        print("start", rid)
        time.sleep(0.3)
        print("end", rid)
        respond(rid, json.dumps({"id": rid, "pid": os.getpid()}).encode())


def idle():
    print("API", os.environ["AWS_LAMBDA_RUNTIME_API"])
    time.sleep(60)


def term():
    import signal

    def on_term(signum, frame):
        print("got SIGTERM")
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    print("waiting")
    next_invocation()


{
    "echo": echo,
    "error": error,
    "init_error": init_error,
    "sleep": sleep,
    "flood": flood,
    "exit_mid": exit_mid,
    "probe": probe,
    "slow": slow,
    "idle": idle,
    "term": term,
}[sys.argv[1]]()
