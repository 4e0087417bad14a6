"""The Python runtime wrapper on this interpreter: loading both styles, the deploy check, responses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[3] / "handlers" / "runtimes" / "python"
sys.path.insert(0, str(RUNTIME))
import runtime  # noqa: E402


def check(code_dir: Path, entry: str, handler: str = "handler") -> tuple[int, dict[str, object], str]:
    env = {**os.environ, "FAAS_CODE_DIR": str(code_dir), "FAAS_ENTRY": entry, "FAAS_HANDLER": handler}
    done = subprocess.run(
        [sys.executable, str(RUNTIME / "runtime.py"), "--check"], env=env, capture_output=True, text=True
    )
    return done.returncode, json.loads(done.stdout), done.stderr


@pytest.mark.parametrize(
    ("source", "verdict"),
    [
        ("def handler(event, context):\n    return 1\n", {"ok": True, "style": "module"}),
        ("from json import dumps as handler\n", {"ok": True, "style": "module"}),
        ("return event\n", {"ok": True, "style": "script"}),
        ("for i in range(3):\n    yield i\n", {"ok": True, "style": "script"}),
        ("import asyncio\nawait asyncio.sleep(0)\nreturn 1\n", {"ok": True, "style": "script"}),
        ("x = (\n", {"ok": False, "error": "f.py:1:5: SyntaxError: '(' was never closed"}),
        (
            "x = 1\n",
            {
                "ok": False,
                "error": "f.py defines no handler(event, context) and has no top-level return: write one or the other",
            },
        ),
        ("import no_such_module\nreturn 1\n", {"ok": True, "style": "script"}),  # imports run per request
        ("import no_such_module\ndef handler(e, c): pass\n", {"ok": False}),
        # Module scope never names the handler: told apart by its tree, as a script body is.
        ("def setup():\n    global handler\n    handler = lambda e, c: 1\nsetup()\n", {"ok": True, "style": "module"}),
    ],
)
def test_check_tells_the_style_or_what_is_wrong(tmp_path: Path, source: str, verdict: dict[str, object]) -> None:
    (tmp_path / "f.py").write_text(source)
    code, said, _ = check(tmp_path, "f.py")
    assert {key: said[key] for key in verdict} == verdict
    assert code == (0 if verdict["ok"] else 1)


def test_check_keeps_what_the_code_prints_out_of_the_verdict(tmp_path: Path) -> None:
    (tmp_path / "f.py").write_text("print('loading')\ndef handler(e, c):\n    return 1\n")
    code, said, stderr = check(tmp_path, "f.py")
    assert code == 0 and said["ok"] is True and "loading" in stderr


def test_a_module_loads_without_importing_ast_or_traceback(tmp_path: Path) -> None:
    """Every container of a function pays for what its wrapper imports before a connection comes."""
    (tmp_path / "f.py").write_text(
        "import sys\nprint(sorted(m for m in ('ast', 'traceback') if m in sys.modules))\n"
        "def handler(e, c):\n    return 1\n"
    )
    code, said, stderr = check(tmp_path, "f.py")
    assert code == 0 and said["style"] == "module"
    assert stderr.strip() == "[]"


def test_script_keeps_its_line_numbers(tmp_path: Path) -> None:
    (tmp_path / "f.py").write_text("a = 1\n\nreturn event['missing']\n")
    os.environ["FAAS_ENTRY"] = "f.py"
    try:
        runtime.CODE_DIR = str(tmp_path)
        style, function = runtime.load("handler")
        with pytest.raises(KeyError) as caught:
            function({}, None)
    finally:
        del os.environ["FAAS_ENTRY"]
    assert style == "script" and caught.traceback[-1].lineno + 1 == 3


@pytest.mark.parametrize(
    ("result", "parts"),
    [
        ({"a": 1}, (200, [], b'{"a": 1}', "application/json")),
        ([1, True, None], (200, [], b"[1, true, null]", "application/json")),
        (3.5, (200, [], b"3.5", "application/json")),
        ("text", (200, [], b"text", "text/plain; charset=utf-8")),
        (b"\x00", (200, [], b"\x00", "application/octet-stream")),
        ({"statusCode": 404}, (404, [], b"", None)),
        (
            {"statusCode": 201, "headers": {"X-A": 1}, "body": "made"},
            (201, [("X-A", "1")], b"made", "text/plain; charset=utf-8"),
        ),
        ({"statusCode": 200, "body": "cmF3", "isBase64Encoded": True}, (200, [], b"raw", "application/octet-stream")),
        ({"statusCode": 200, "other": 1}, (200, [], b'{"statusCode": 200, "other": 1}', "application/json")),
    ],
)
def test_what_a_handler_returns_becomes_the_response(result: object, parts: tuple[object, ...]) -> None:
    assert runtime.response_parts(result) == parts


@pytest.mark.parametrize(
    ("method", "body", "query", "event"),
    [
        ("POST", b'{"a": 1}', {}, {"a": 1}),
        ("POST", b"plain", {}, "plain"),
        ("GET", b"", {"q": "1"}, {"q": "1"}),
        ("POST", b"", {}, {}),
        ("POST", b"[1]", {"q": "1"}, [1]),
    ],
)
def test_the_event_is_the_body_or_the_query(method: str, body: bytes, query: dict[str, str], event: object) -> None:
    assert runtime.parse_event(method, body, query) == event


def test_the_wrapper_compiles_itself_into_what_a_runtime_layer_takes(tmp_path: Path) -> None:
    from faasd.errors import InvalidImage
    from faasd.source.runtimes import read_compiled

    laid = tmp_path / "runtime"  # as the wrapper layer lays them out: the SDK beside the wrapper
    laid.mkdir()
    shutil.copy(RUNTIME / "runtime.py", laid)
    shutil.copy(RUNTIME.parents[1] / "faas_handler.py", laid)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(laid / "runtime.py"), "--compile", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0 and json.loads(done.stdout)["ok"] is True, done.stderr
    compiled = read_compiled(out / "__pycache__")
    tag = sys.implementation.cache_tag
    assert sorted(compiled) == [f"runtime/__pycache__/faas_handler.{tag}.pyc", f"runtime/__pycache__/runtime.{tag}.pyc"]
    (out / "__pycache__" / f"evil.{tag}.pyc").symlink_to("/etc/shadow")
    with pytest.raises(InvalidImage, match="evil"):  # a link is never followed
        read_compiled(out / "__pycache__")
