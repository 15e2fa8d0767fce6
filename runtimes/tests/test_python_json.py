"""The Python bootstrap's JSON functions (`_loads`, `_dumps` in
runtimes/python3/bootstrap/strata_bootstrap.py) give exactly what `json.loads` and `json.dumps`
give — values, output text and errors — with and without the `_json` accelerator, and without
importing `json` unless a document needs it.

Run from the repository root:  python3 -m unittest discover -s runtimes/tests -v
"""

import json
import math
import os
import subprocess
import sys
import unittest
import unittest.mock

from test_python_http_client import PY_BOOTSTRAP, load_bootstrap

sb = load_bootstrap()

DOCUMENTS = [
    b'{"name": "world"}',
    b'  {"a": [1, 2.5, -3e10, true, false, null, "x"]}  \n',
    b"[]",
    b"{}",
    b'"just a string"',
    b"42",
    b"-0.0",
    b"1e400",
    b"NaN",
    b"[Infinity, -Infinity]",
    "{\"h\u00e9llo\": \"w\u00f6rld \u2603 \U0001F600\"}".encode("utf-8"),
    b'"\\ud83d\\ude00 \\u00e9 \\n\\t\\""',
    b'"\\ud800"',
    b'{"a": {"b": {"c": [[[[{"d": 1}]]]]}}}',
    b'{"dup": 1, "dup": 2}',
    b"12345678901234567890123456789",
    b"\xef\xbb\xbf{\"bom\": true}",
    '{"utf16": "x"}'.encode("utf-16"),
    '{"utf16le": 1}'.encode("utf-16-le"),
    '{"utf32": 1}'.encode("utf-32"),
    # Broken documents: the error must be json's.
    b"{not json",
    b"",
    b"   ",
    b'{"a": 1} extra',
    b'{"a": 1}}',
    b"[1, 2,]",
    b'"unterminated',
    b'"control \x01 char"',
    b"\xff\xfe\xfd",
    b"\xc3\x28",
    b"nul",
    b"{'single': 1}",
]


def outcome(fn, *args, **kw):
    try:
        value = fn(*args, **kw)
    except Exception as e:  # noqa: BLE001 - compared below
        return ("error", type(e), str(e))
    return ("value", json.dumps(value, sort_keys=True, allow_nan=True), type(value))


class LoadsTest(unittest.TestCase):
    def check(self, loads):
        for doc in DOCUMENTS:
            for data in (doc, bytearray(doc)) + ((doc.decode("utf-8"),) if self.utf8(doc) else ()):
                with self.subTest(data=data):
                    self.assertEqual(outcome(loads, data), outcome(json.loads, data))
        with self.subTest("BOM in a str"):
            self.assertEqual(outcome(loads, "\ufeff{}"), outcome(json.loads, "\ufeff{}"))
        with self.subTest("not a document"):
            self.assertEqual(outcome(loads, 42), outcome(json.loads, 42))

    @staticmethod
    def utf8(doc):
        try:
            doc.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    def test_matches_json_loads(self):
        self.assertIsNotNone(sb._scan, "the accelerator is used where it exists")
        self.check(sb._loads)

    def test_matches_json_loads_without_the_accelerator(self):
        with unittest.mock.patch.object(sb, "_scan", None):
            self.check(sb._loads)

    def test_nan_and_big_numbers_keep_their_type(self):
        self.assertTrue(math.isnan(sb._loads(b"NaN")))
        self.assertEqual(sb._loads(b"12345678901234567890123456789"), 12345678901234567890123456789)
        self.assertIs(type(sb._loads(b"1.5")), float)

    def test_deep_nesting_fails_like_json(self):
        deep = b"[" * 100000 + b"]" * 100000
        self.assertEqual(outcome(sb._loads, deep)[:2], outcome(json.loads, deep)[:2])


class Decimalish(float):
    pass


class DumpsTest(unittest.TestCase):
    VALUES = [
        {"hello": "world"},
        {"a": [1, 2.5, -3e10, True, False, None, "x"], "b": (1, 2)},
        "h\u00e9llo \u2603 \U0001F600 \n\t\" \\ \x01",
        42,
        -0.0,
        1e400,
        float("nan"),
        [float("inf"), float("-inf")],
        {1: "int key", 2.5: "float key", True: "bool key", None: "none key"},
        {"nested": {"deep": [[{"x": [1, {"y": 2}]}]]}},
        12345678901234567890123456789,
        Decimalish(1.25),
        [],
        {},
        "",
    ]

    def check(self, dumps, default=None):
        kw = {} if default is None else {"default": default}
        for value in self.VALUES + [object(), {"bad": {1, 2}}, {(1, 2): "tuple key"}]:
            with self.subTest(value=value):
                self.assertEqual(outcome(dumps, value, **kw), outcome(json.dumps, value, **kw))

    def test_matches_json_dumps(self):
        self.check(sb._dumps)
        self.check(sb._dumps, default=sb._json_default)
        self.check(sb._dumps, default=lambda o: sorted(o) if isinstance(o, set) else str(o))

    def test_matches_json_dumps_without_the_accelerator(self):
        with unittest.mock.patch.object(sb, "_json", None):
            self.check(sb._dumps)
            self.check(sb._dumps, default=sb._json_default)

    def test_circular_references_fail_like_json(self):
        loop = []
        loop.append(loop)
        self.assertEqual(outcome(sb._dumps, loop), outcome(json.dumps, loop))
        self.assertEqual(outcome(sb._dumps, loop)[0], "error")

    def test_not_serializable_message(self):
        self.assertEqual(outcome(sb._dumps, object()), outcome(json.dumps, object()))


class FreshInterpreterTest(unittest.TestCase):
    """In a fresh interpreter (where `json` has not been imported, as in an instance) a good
    document imports no `json`, and a broken one raises json's own error."""

    def test_json_is_imported_only_for_broken_documents(self):
        code = """if True:
            import importlib.util, sys
            assert "json" not in sys.modules
            spec = importlib.util.spec_from_file_location("sb", sys.argv[1])
            sb = importlib.util.module_from_spec(spec)
            sys.dont_write_bytecode = True
            spec.loader.exec_module(sb)
            assert "json" not in sys.modules
            print(sb._loads(b'{"a": [1, "\\u00e9"]}'), sb._dumps({"b": 2.5}))
            print("json" in sys.modules)
            try:
                sb._loads(b'{"a": 1,}')
            except ValueError as e:
                print(type(e).__name__, e)
        """
        out = subprocess.run([sys.executable, "-c", code, PY_BOOTSTRAP], capture_output=True,
                             text=True, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.splitlines(), [
            "{'a': [1, '\u00e9']} {\"b\": 2.5}",
            "False",
            "JSONDecodeError Illegal trailing comma before end of object: line 1 column 8 (char 7)"
            if sys.version_info >= (3, 13) else
            "JSONDecodeError Expecting property name enclosed in double quotes: line 1 column 9 "
            "(char 8)",
        ])


if __name__ == "__main__":
    unittest.main()
