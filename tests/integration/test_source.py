"""Functions from source with the real daemon: runtimes, both code styles, responses, refusals, versions.

The tests of what a function answers run in both sandbox modes: the daemon's default is a runc
container per connection in one run, a child forked from a template (``--sandbox fork``) in the
other; the rest (refusals, runtimes, one-shot runs) run once, under runc.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import (
    Daemon,
    daemon_range,
    eventually,
    free_port,
    http_get,
    http_request,
    python_daemon,
)

SOURCE = Path(__file__).parent / "source"
SOURCE_JS = Path(__file__).parent / "source_js"
MODES = {"runc": 50, "fork": 52}  # each sandbox mode's daemon range
GATEWAY_PORT = free_port()  # one mode's daemon stops before the other's starts
runc_only = pytest.mark.parametrize("daemon", ["runc"], indirect=True)


@dataclass(frozen=True)
class Lang:
    """What a test sends and expects in one language; the tests that read it run once per runtime."""

    runtime: str
    ext: str  # of an entry file
    source: Path  # the fixture dir of the every-shape function
    failed: str  # the error its "fail" kind answers
    code_frame: str  # how its traceback names the function's own file
    wrapper: str  # the runtime wrapper's file, left out of tracebacks
    language: str  # go-faas's name of it


PYTHON = Lang(
    "python",
    ".py",
    SOURCE,
    "ValueError: asked to fail",
    'File "/faas/code/handler.py"',
    "/faas/runtime/runtime.py",
    "python",
)
NODE = Lang(
    "node", ".js", SOURCE_JS, "Error: asked to fail", "/faas/code/handler.js:", "/faas/runtime/runtime.js", "javascript"
)
# Each language in each sandbox mode it has (node has no fork mode), or under runc alone.
by_language = pytest.mark.parametrize(
    ("daemon", "lang"),
    [
        pytest.param("runc", PYTHON, id="runc-python"),
        pytest.param("fork", PYTHON, id="fork-python"),
        pytest.param("runc", NODE, id="runc-node"),
    ],
    indirect=["daemon"],
)
by_language_runc = pytest.mark.parametrize(
    ("daemon", "lang"),
    [pytest.param("runc", PYTHON, id="runc-python"), pytest.param("runc", NODE, id="runc-node")],
    indirect=["daemon"],
)


@pytest.fixture(scope="module", params=list(MODES))
def daemon(
    request: pytest.FixtureRequest, daemon_roots: Path, python_runtime_image: Path, node_runtime_image: Path
) -> Iterator[Daemon]:
    """One daemon for the module and sandbox mode (its default), with the python runtime added once,
    and under runc the node runtime (it has no fork mode)."""
    mode = request.param
    # One warm container a function, and a short drain: the machine's cores are few.
    with python_daemon(
        daemon_roots,
        python_runtime_image,
        daemon_range(MODES[mode]),
        *("--gateway", f"127.0.0.1:{GATEWAY_PORT}", "--warm", "1", "--drain-timeout", "1"),
        *("--sandbox", mode),
    ) as daemon:
        if mode == "runc":  # node has no fork mode
            added = daemon.faas("runtime", "add", "node", "-f", str(node_runtime_image))
            assert added.returncode == 0, added.stderr
        yield daemon


def post_control(daemon: Daemon, path: str, body: object) -> tuple[int, dict]:
    """A JSON POST to the control API on the daemon's unix socket, as any HTTP client sends it."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(daemon.socket))
        conn = http.client.HTTPConnection("localhost")
        conn.sock = sock
        conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())


def deploy(daemon: Daemon, name: str, *args: str, runtime: str = "python") -> str:
    result = daemon.faas("new", name, "--runtime", runtime, *args)
    assert result.returncode == 0, result.stderr
    return daemon.faas("ip", name).stdout.strip()


def code_of(lang: Lang, python: str, js: str) -> str:
    return python if lang is PYTHON else js


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def post_json(ip: str, event: object) -> tuple[int, dict[str, str], bytes]:
    return http_request(ip, "POST", "/", json.dumps(event).encode(), {"Content-Type": "application/json"})


def post_for_json(ip: str, event: object) -> tuple[int, object]:
    """Status and parsed JSON answer of a POST: each runtime spaces its JSON its own way."""
    status, _, body = post_json(ip, event)
    return status, json.loads(body)


@runc_only
def test_runtime_list(daemon: Daemon) -> None:
    listed = json.loads(daemon.faas("runtime", "list", "--json").stdout)
    assert [(r["name"], r["language"], r["layers"]) for r in listed] == [("node", "node", 3), ("python", "python", 3)]
    cache = daemon.state_dir / "runtimes" / "python" / "3" / "rootfs" / "faas" / "runtime" / "__pycache__"
    assert sorted(p.name.split(".")[0] for p in cache.iterdir()) == ["faas_handler", "runtime"], "compiled at add"
    wrapper = daemon.state_dir / "runtimes" / "node" / "3" / "rootfs" / "faas" / "runtime"
    assert sorted(p.name for p in wrapper.iterdir()) == ["runtime.js"], "node keeps no bytecode: the wrapper alone"


@by_language
def test_a_module_function_answers_in_every_shape(daemon: Daemon, lang: Lang) -> None:
    name = f"shapes-{lang.runtime}"
    ip = deploy(daemon, name, "--code", str(lang.source), "--entry", f"handler{lang.ext}", runtime=lang.runtime)
    status, headers, body = post_json(ip, {"a": 1})
    assert status == 200 and headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["event"] == {"a": 1} and answer["function"] == name and answer["version"] == 1
    assert answer["method"] == "POST" and answer["path"] == "/" and answer["remaining"] is True
    assert len(answer["request_id"]) == 16

    status, _, body = http_request(ip, "GET", "/some/path?kind=x&n=1", headers={"X-Agent": "tester"})
    answer = json.loads(body)
    assert status == 200 and answer["event"] == {"kind": "x", "n": "1"}, "a GET's event is its query"
    assert answer["path"] == "/some/path" and answer["agent"] == "tester" and answer["method"] == "GET"

    assert post_json(ip, {"kind": "text", "name": "source"})[::2] == (200, b"hello source")
    assert post_json(ip, {"kind": "text"})[1]["content-type"] == "text/plain; charset=utf-8"
    status, headers, body = post_json(ip, {"kind": "bytes"})
    assert (status, headers["content-type"], body) == (200, "application/octet-stream", b"\x00\x01binary")
    status, headers, body = post_json(ip, {"kind": "shape"})
    assert (status, headers["x-made"], json.loads(body)) == (201, "yes", {"made": True})
    assert post_json(ip, {"kind": "b64"})[::2] == (200, b"raw")
    assert post_json(ip, {"kind": "number"})[::2] == (200, b"42")
    status, _, body = http_request(ip, "POST", "/", b"not json")
    assert status == 200 and json.loads(body)["event"] == "not json", "a body that is not JSON comes as text"

    status, headers, body = post_json(ip, {"kind": "fail"})
    error = json.loads(body)
    assert status == 500 and headers["content-type"] == "application/json"
    assert error == {"error": lang.failed, "request_id": error["request_id"]}

    def logged() -> str:
        return daemon.faas("logs", name).stdout

    assert eventually(lambda: lang.code_frame in logged())
    lines = logged().splitlines()
    failed = [line for line in lines if line.split()[1] == error["request_id"]]
    assert any(lang.code_frame in line for line in failed), "the traceback is in the log"
    assert not any(lang.wrapper in line for line in failed), "the wrapper's frames are left out"
    assert any(" stdout module loaded" in line for line in lines) and any("called with" in line for line in lines)
    assert b"called with" not in body, "print goes to the log, never into the response"

    described = json.loads(daemon.faas("describe", name, "--json").stdout)
    entry = f"handler{lang.ext}"
    assert (described["runtime"], described["entry"], described["image"]) == (
        lang.runtime,
        entry,
        f"runtime/{lang.runtime}",
    )
    assert f"Runtime:   {lang.runtime}" in daemon.faas("describe", name).stdout

    # Requests one after another on one connection (keep-alive), each answered in turn.
    conn = http.client.HTTPConnection(ip, 80, timeout=30)
    for n in range(3):
        conn.request("POST", "/", json.dumps({"kind": "text", "name": str(n)}).encode())
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, f"hello {n}".encode())
    conn.close()


@by_language
def test_script_body_style_versions_and_rollback(daemon: Daemon, tmp_path: Path, lang: Lang) -> None:
    name, entry = f"double-{lang.runtime}", f"double{lang.ext}"
    v1 = code_of(
        lang,
        'print("doubling")\nreturn {"double": event["a"] * 2}\n',
        'console.log("doubling");\nreturn { double: event.a * 2 };\n',
    )
    ip = deploy(daemon, name, "--code", str(write(tmp_path, entry, v1)), runtime=lang.runtime)
    assert post_for_json(ip, {"a": 21}) == (200, {"double": 42})
    v2 = write(tmp_path, entry, code_of(lang, "return f\"{event['a'] * 2} (v2)\"\n", "return `${event.a * 2} (v2)`;\n"))
    assert deploy(daemon, name, "--code", str(v2), runtime=lang.runtime) == ip
    assert post_json(ip, {"a": 2})[::2] == (200, b"4 (v2)")
    again = daemon.faas("new", name, "--runtime", lang.runtime, "--code", str(v2))
    assert again.returncode == 0 and "same image as version 2" in again.stdout, "the same code is no new version"

    listing = json.loads(daemon.faas("versions", name, "--json").stdout)
    assert [(v["version"], v["runtime"], v["entry"]) for v in listing["versions"]] == [
        (1, lang.runtime, entry),
        (2, lang.runtime, entry),
    ]
    assert daemon.faas("rollback", name).returncode == 0
    assert post_for_json(ip, {"a": 5}) == (200, {"double": 10})
    pinned = daemon.faas("ip", name, "--version", "2").stdout.strip()
    assert post_json(pinned, {"a": 5})[::2] == (200, b"10 (v2)")
    assert eventually(lambda: "stdout doubling" in daemon.faas("logs", name).stdout)


@by_language
def test_async_handler_and_a_custom_handler_name(daemon: Daemon, tmp_path: Path, lang: Lang) -> None:
    code = code_of(
        lang,
        "import asyncio\nasync def run(event, context):\n    await asyncio.sleep(0)\n    return [1, 2]\n",
        "exports.run = async (event, context) => {\n"
        "  await new Promise((done) => setTimeout(done, 1));\n  return [1, 2];\n};\n",
    )
    code_file = write(tmp_path, f"main{lang.ext}", code)
    ip = deploy(daemon, f"async-{lang.runtime}", "--code", str(code_file), "--handler", "run", runtime=lang.runtime)
    status, body = http_get(ip)
    assert (status, json.loads(body)) == (200, [1, 2])


STATEFUL = """import os, uuid
LOADED = uuid.uuid4().hex
seen = None
def handler(event, context):
    global seen
    previous, seen = seen, event
    return {"previous": previous, "loaded": LOADED, "pid": os.getpid(), "proc": sorted(os.listdir("/proc"))}
"""


@runc_only
def test_fork_mode_forks_every_call_from_code_loaded_once(daemon: Daemon, tmp_path: Path) -> None:
    code = str(write(tmp_path, "state.py", STATEFUL))
    forked = deploy(daemon, "forked", "--code", code, "--sandbox", "fork")
    answers = [json.loads(post_json(forked, {"n": n})[2]) for n in range(3)]
    assert [answer["previous"] for answer in answers] == [None] * 3, "a global one call sets is unset for the next"
    assert len({answer["loaded"] for answer in answers}) == 1, "the code was loaded once, by the template"
    assert all(answer["pid"] == 1 and answer["proc"] == ["self"] for answer in answers), "a pid namespace each"
    assert "sandbox fork" in daemon.faas("describe", "forked").stdout
    listing = json.loads(daemon.faas("versions", "forked", "--json").stdout)
    assert [v["limits"]["sandbox"] for v in listing["versions"]] == ["fork"]

    started = deploy(daemon, "started", "--code", code)  # the daemon's default: a container per call
    answers = [json.loads(post_json(started, {"n": n})[2]) for n in range(3)]
    assert [answer["previous"] for answer in answers] == [None] * 3
    assert len({answer["loaded"] for answer in answers}) == 3, "each container loaded the code itself"
    assert "sandbox runc" in daemon.faas("describe", "started").stdout


@runc_only
@pytest.mark.parametrize(
    ("name", "text", "args", "said"),
    [
        ("syntax.py", "def handler(event, context):\n    return {'a': 1\n", (), "syntax.py:2:12: SyntaxError"),
        ("indent.py", "x = 1\n  y = 2\n", (), "indent.py:2:2: IndentationError: unexpected indent"),
        ("nothing.py", "x = 1\n", (), "defines no handler(event, context) and has no top-level return"),
        ("named.py", "def handler(e, c):\n    return 1\n", ("--handler", "main"), "defines no main(event, context)"),
        ("boom.py", "raise RuntimeError('at import')\ndef handler(e, c): pass\n", (), "RuntimeError: at import"),
        ("notfn.py", "handler = 3\n", (), "handler is not a function"),
        (
            "syntax.js",
            "module.exports = (event) => ({ a: 1 +* 2 });\n",
            (),
            "syntax.js:1:38: SyntaxError: Unexpected token '*'",
        ),
        (
            "open.js",
            "module.exports = (event) => {\n  return { a: 1\n};\n",
            (),
            "open.js:4:1: SyntaxError: Unexpected end of input",
        ),
        ("body.js", "const a = 1;\nreturn { a: a +* 2 };\n", (), "body.js:2:16: SyntaxError: Unexpected token '*'"),
        (
            "esm.mjs",
            "export default (event) => {\n  return (1;\n};\n",
            (),
            "esm.mjs:2:12: SyntaxError: Unexpected token ';'",
        ),
        (
            "export.js",
            "export default () => 1;\n",
            (),
            "export.js:1:1: SyntaxError: Unexpected token 'export' (an ES module: name it .mjs",
        ),
        ("nothing.js", "const x = 1;\n", (), "nothing.js exports no handler(event, context)"),
        ("named.js", "exports.handler = () => 1;\n", ("--handler", "main"), "named.js exports no main(event, context)"),
        ("boom.js", "throw new Error('at import');\n", (), "boom.js failed while loading: Error: at import"),
        ("nofn.mjs", "export const handler = 3;\n", (), "nofn.mjs exports no function"),
    ],
)
def test_bad_code_is_refused_at_deploy_and_leaves_nothing(
    daemon: Daemon, tmp_path: Path, name: str, text: str, args: tuple[str, ...], said: str
) -> None:
    before = sorted((daemon.state_dir / "images").iterdir())
    runtime = "python" if name.endswith(".py") else "node"
    result = daemon.faas("new", "refused", "--runtime", runtime, "--code", str(write(tmp_path, name, text)), *args)
    assert result.returncode == 1 and said in result.stderr, result.stderr
    assert "refused" not in daemon.faas("list").stdout
    assert sorted((daemon.state_dir / "images").iterdir()) == before
    assert list((daemon.state_dir / "uploads").iterdir()) == []
    left = [p.name for p in (daemon.root / "run" / "bundles").iterdir() if p.name.startswith(("oneshot-", "code-"))]
    assert left == [], "the check's container and its copy of the code are gone"


@runc_only
def test_deploys_refused_before_any_container(daemon: Daemon, tmp_path: Path) -> None:
    code = write(tmp_path, "ok.py", "return 1\n")
    unknown = daemon.faas("new", "nope", "--runtime", "ruby", "--code", str(code))
    assert unknown.returncode == 1 and "no runtime named 'ruby'" in unknown.stderr
    big = write(tmp_path, "big.py", "# " + "x" * (1024 * 1024) + "\nreturn 1\n")
    over = daemon.faas("new", "nope", "--runtime", "python", "--code", str(big))
    assert over.returncode == 1 and "over the 1048576 byte limit" in over.stderr
    entry = daemon.faas("new", "nope", "--runtime", "python", "--code", str(code), "--entry", "missing.py")
    assert entry.returncode == 1 and "the entry 'missing.py' is not one of the files sent" in entry.stderr
    assert "nope" not in daemon.faas("list").stdout


@runc_only
def test_runtime_rm_is_refused_while_used_and_a_runtime_needs_its_interpreter(
    daemon: Daemon, busybox_image, python_runtime_image: Path, tmp_path: Path
) -> None:
    # A second runtime from the same image: its layers are shared with the first, nothing is unpacked again.
    assert daemon.faas("runtime", "add", "py2", "--language", "python", "-f", str(python_runtime_image)).returncode == 0
    deploy(daemon, "onpy2", "--code", str(write(tmp_path, "f.py", "return 'two'\n")))
    refused = daemon.faas("runtime", "rm", "python")
    assert refused.returncode == 1 and "is used by" in refused.stderr

    result = daemon.faas("new", "onpy2b", "--runtime", "py2", "--code", str(write(tmp_path, "g.py", "return 'py2'\n")))
    assert result.returncode == 0, result.stderr
    assert http_get(daemon.faas("ip", "onpy2b").stdout.strip()) == (200, b"py2")
    used = daemon.faas("runtime", "rm", "py2")
    assert used.returncode == 1 and "onpy2b" in used.stderr
    assert daemon.faas("rm", "onpy2b").returncode == 0
    assert daemon.faas("runtime", "rm", "py2").returncode == 0
    assert "py2" not in daemon.faas("runtime", "list").stdout
    assert not (daemon.state_dir / "runtimes" / "py2").exists()

    no_python = daemon.faas("runtime", "add", "python", "-f", str(busybox_image()))
    assert no_python.returncode == 1 and "exists" in no_python.stderr
    no_python = daemon.faas("runtime", "add", "bb", "--language", "python", "-f", str(busybox_image()))
    assert no_python.returncode == 1 and "cannot run faasd's python wrapper" in no_python.stderr
    assert not (daemon.state_dir / "runtimes" / "bb").exists()
    unnamed = daemon.faas("runtime", "add", "ruby", "-f", str(busybox_image()))
    assert unnamed.returncode != 0 and "language" in unnamed.stderr


@runc_only
def test_runtimes_and_source_functions_survive_a_restart(daemon: Daemon, tmp_path: Path) -> None:
    ip = deploy(daemon, "kept", "--code", str(write(tmp_path, "k.py", "return 'kept'\n")))
    daemon.stop()
    # A runtime whose record never got written (a crash mid-add) is gone after the restart.
    half = daemon.state_dir / "runtimes" / "half" / "2"
    half.mkdir(parents=True)
    daemon.start()
    assert http_get(ip) == (200, b"kept")
    assert not half.parent.exists()
    assert [r["name"] for r in json.loads(daemon.faas("runtime", "list", "--json").stdout)] == ["node", "python"]
    assert http_get(deploy(daemon, "again", "--code", str(write(tmp_path, "a.py", "return 'again'\n")))) == (
        200,
        b"again",
    )


@by_language_runc
def test_the_readme_examples_answer_as_shown(daemon: Daemon, lang: Lang) -> None:
    examples = Path(__file__).resolve().parents[2] / "handlers" / "source"
    add = deploy(daemon, f"readme-add-{lang.runtime}", "--code", str(examples / f"add{lang.ext}"), runtime=lang.runtime)
    assert post_for_json(add, {"a": 1, "b": 2}) == (200, {"sum": 3})
    double = deploy(
        daemon, f"readme-double-{lang.runtime}", "--code", str(examples / f"double{lang.ext}"), runtime=lang.runtime
    )
    assert post_for_json(double, {"n": 21}) == (200, {"double": 42})


RUN_ONCE = {
    "python": (
        "def handler(event, context):\n    print('said')\n    return {'n': event['n'] + 1}\n",
        "return 1 / event\n",
        "ZeroDivisionError: division by zero",
        'File "/faas/code/fails.py", line 1',
        "import time\ntime.sleep(60)\nreturn 1\n",
    ),
    "node": (
        "module.exports = (event, context) => {\n  console.log('said');\n  return { n: event.n + 1 };\n};\n",
        "if (event === 0) throw new RangeError('division by zero');\nreturn 1 / event;\n",
        "RangeError: division by zero",
        "/faas/code/fails.js:1:",
        "await new Promise((done) => setTimeout(done, 60000));\nreturn 1;\n",
    ),
}


@by_language_runc
def test_run_once_deploys_nothing_and_answers_result_stdout_stderr(daemon: Daemon, tmp_path: Path, lang: Lang) -> None:
    once, fails, error, frame, sleeps = RUN_ONCE[lang.runtime]
    code = write(tmp_path, f"once{lang.ext}", once)
    before = daemon.faas("list", "--json").stdout
    result = daemon.faas("run", "--runtime", lang.runtime, "--code", str(code), "--input", '{"n": 1}')
    answer = json.loads(result.stdout)
    assert result.returncode == 0 and answer["result"] == {"n": 2} and answer["stdout"] == "said\n"
    assert answer["exit_code"] == 0 and answer["stderr"] == "" and answer["duration_ms"] > 0
    failing = write(tmp_path, f"fails{lang.ext}", fails)
    result = daemon.faas("run", "--runtime", lang.runtime, "--code", str(failing), "--input", "0")
    answer = json.loads(result.stdout)
    assert result.returncode == 1 and answer["error"] == error
    assert answer["exit_code"] == 1 and frame in answer["stderr"]
    sleeper = write(tmp_path, f"sleeps{lang.ext}", sleeps)
    result = daemon.faas("run", "--runtime", lang.runtime, "--code", str(sleeper), "--timeout", "1")
    answer = json.loads(result.stdout)
    assert result.returncode == 1 and answer["exit_code"] is None and "took over 1 s" in answer["error"]
    assert daemon.faas("list", "--json").stdout == before, "a run deploys nothing"


@runc_only
def test_run_once_streams_each_line_and_item_as_it_comes_then_the_answer(daemon: Daemon, tmp_path: Path) -> None:
    code = (
        "import time\ndef handler(event, context):\n    for i in range(3):\n        print(f'line {i}')\n"
        "        yield {'i': i, 't': time.time()}\n        time.sleep(0.4)\n    return 'done'\n"
    )
    source = {"runtime": "python", "files": {"gen.py": code}, "input": None, "stream": True}
    events = post_control_events(daemon, "/v1/run", source)
    assert [(name, data) for _, name, data in events[:6:2]] == [("message", f"line {i}") for i in range(3)]
    items = [json.loads(data) for _, _, data in events[1:6:2]]
    assert [item["i"] for item in items] == [0, 1, 2]
    delays = [arrived - item["t"] for (arrived, _, _), item in zip(events[1:6:2], items, strict=True)]
    print("run-once SSE delays from yield to arrival (ms):", [round(d * 1000, 2) for d in delays])
    assert all(delay < 0.4 for delay in delays), "each item arrives before the next is made"
    name, answer = events[6][1], json.loads(events[6][2])
    assert (name, answer["result"], answer["exit_code"], len(events)) == ("result", "done", 0, 7)

    path = write(tmp_path, "count.py", "for i in range(2):\n    print(f'step {i}')\nreturn {'done': True}\n")
    result = daemon.faas("run", "--runtime", "python", "--code", str(path), "--stream")
    lines, _, rest = result.stdout.partition("{")
    assert result.returncode == 0 and lines == "step 0\nstep 1\n", result.stdout
    assert json.loads("{" + rest)["result"] == {"done": True}
    failing = write(tmp_path, "fails.py", "print('before')\nreturn 1 / 0\n")
    result = daemon.faas("run", "--runtime", "python", "--code", str(failing), "--stream")
    lines, _, rest = result.stdout.partition("{")
    assert result.returncode == 1 and lines == "before\n"
    assert json.loads("{" + rest)["error"] == "ZeroDivisionError: division by zero"

    run_now = {"language": "python", "code": "print('working')\nreturn {'sum': event['a']}", "input": '{"a": 4}'}
    events = post_control_events(daemon, "/run-now", run_now | {"stream": True})
    assert [(name, data) for _, name, data in events] == [("message", "working"), ("result", '{"sum": 4}')]
    events = post_control_events(
        daemon, "/run-now", run_now | {"stream": True, "code": "if event:\n  raise KeyError('x')\nreturn 1"}
    )
    assert events[-1][1] == "error" and json.loads(events[-1][2])["error"] == "KeyError: 'x'"
    status, refused = post_control(daemon, "/v1/run", source | {"runtime": "nosuch"})
    assert status == 404, "a refusal before the code runs keeps its own status, streaming or not"


# The examples of go-faas's own README, per language: an upload's path and code; run-now's code,
# a text answer and a failure with what it says.
GO_FAAS = {
    "python": (
        "math/add",
        'return {"result": event["a"] + event["b"]}',
        "result = {\n  'sum': event['a'] + event['b'],\n  'product': event['a'] * event['b']\n}\nreturn result",
        "return 'hi'",
        ("if event:\n  raise KeyError('x')\nreturn 1", "KeyError: 'x'"),
    ),
    "node": (
        "js/math/add",
        "return { result: event.a + event.b };",
        "const result = {\n  sum: event.a + event.b,\n  product: event.a * event.b\n};\nreturn result;",
        "return 'hi';",
        ("if (event) throw new TypeError('x');\nreturn 1;", "TypeError: x"),
    ),
}


@by_language
def test_go_faas_upload_run_now_and_its_path_names(daemon: Daemon, lang: Lang) -> None:
    """The examples of go-faas's own README, sent as its clients send them."""
    path, uploaded, run_code, text_code, (failing_code, failed_error) = GO_FAAS[lang.runtime]
    upload = {"path": path, "language": lang.language, "code": uploaded}
    status, answer = post_control(daemon, "/upload", upload)
    assert status == 200 and (answer["path"], answer["language"]) == (path, lang.language)
    assert abs(answer["version"] - time.time()) < 120, "the version is the upload's Unix time"
    name = path.replace("/", "-")
    ip = daemon.faas("ip", name).stdout.strip()
    assert post_for_json(ip, {"a": 10, "b": 5}) == (200, {"result": 15})
    status, again = post_control(daemon, "/upload", upload)
    assert status == 200 and json.loads(daemon.faas("versions", name, "--json").stdout)["current"] == 2

    run_now = {"language": lang.language, "code": run_code, "input": '{"a": 10, "b": 5}'}
    assert post_control(daemon, "/run-now", run_now) == (200, {"data": {"sum": 15, "product": 50}, "type": "json"})
    assert post_control(daemon, "/run-now", run_now | {"code": text_code}) == (200, {"data": "hi", "type": "text"})
    status, failed = post_control(daemon, "/run-now", run_now | {"code": failing_code})
    assert status == 500 and failed["error"] == failed_error
    status, refused = post_control(daemon, "/upload", upload | {"language": "cobol"})
    assert status == 400 and "unknown language 'cobol'" in refused["error"]


def sse_events(ip: str, headers: dict[str, str] | None = None) -> list[tuple[float, str, str]]:
    """Each event of an SSE response as (arrival time, event name, data), read as it arrives."""
    conn = http.client.HTTPConnection(ip, 80, timeout=30)
    conn.request("GET", "/", headers=headers or {})
    return read_events(conn)


def post_control_events(daemon: Daemon, path: str, body: object) -> list[tuple[float, str, str]]:
    """The events of a JSON POST to the control API that streams, as ``sse_events`` reads them."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(daemon.socket))
        conn = http.client.HTTPConnection("localhost", timeout=30)
        conn.sock = sock
        conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        return read_events(conn)


def read_events(conn: http.client.HTTPConnection) -> list[tuple[float, str, str]]:
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    events, name, data = [], "message", []
    while line := response.readline():
        text = line.decode().rstrip("\n")
        if text.startswith("event: "):
            name = text[len("event: ") :]
        elif text.startswith("data: "):
            data.append(text[len("data: ") :])
        elif not text and data:
            events.append((time.time(), name, "\n".join(data)))
            name, data = "message", []
    conn.close()
    return events


STREAMS = {
    "python": (
        "import time\ndef handler(event, context):\n    for i in range(3):\n"
        "        yield {'i': i, 't': time.time()}\n        time.sleep(0.5)\n    return 'done'\n",
        "import time\nfor i in range(3):\n    print(f'step {i}')\n    time.sleep(0.3)\nreturn {'done': True}\n",
        "def handler(event, context):\n    yield 1\n    raise ValueError('mid-stream')\n",
        "ValueError: mid-stream",
    ),
    "node": (
        "module.exports = async function* (event, context) {\n  for (let i = 0; i < 3; i++) {\n"
        "    yield { i, t: Date.now() / 1000 };\n    await new Promise((done) => setTimeout(done, 500));\n  }\n"
        "  return 'done';\n};\n",
        "for (let i = 0; i < 3; i++) {\n  console.log(`step ${i}`);\n"
        "  await new Promise((done) => setTimeout(done, 300));\n}\nreturn { done: true };\n",
        "module.exports = function* (event, context) {\n  yield 1;\n  throw new Error('mid-stream');\n};\n",
        "Error: mid-stream",
    ),
}


@by_language
def test_a_generator_streams_each_item_the_moment_it_is_yielded(daemon: Daemon, tmp_path: Path, lang: Lang) -> None:
    code = STREAMS[lang.runtime][0]
    ip = deploy(
        daemon, f"stream-{lang.runtime}", "--code", str(write(tmp_path, f"gen{lang.ext}", code)), runtime=lang.runtime
    )
    http_get(ip)  # a first connection, so the next one finds its container warm
    events = sse_events(ip)
    assert [(name, json.loads(data)["i"]) for _, name, data in events[:3]] == [("message", i) for i in range(3)]
    assert events[3][1:] == ("result", "done")
    delays = [arrived - json.loads(data)["t"] for arrived, _, data in events[:3]]
    print("SSE delays from yield to arrival (ms):", [round(d * 1000, 2) for d in delays])
    assert all(delay < 0.5 for delay in delays), "each item arrives before the next is made: nothing is held back"


@by_language
def test_accept_event_stream_streams_what_the_code_prints(daemon: Daemon, tmp_path: Path, lang: Lang) -> None:
    _, printer, failing, error = STREAMS[lang.runtime]
    name = f"printer-{lang.runtime}"
    ip = deploy(daemon, name, "--code", str(write(tmp_path, f"p{lang.ext}", printer)), runtime=lang.runtime)
    events = sse_events(ip, {"Accept": "text/event-stream"})
    assert [(name, data) for _, name, data in events[:3]] == [
        ("message", "step 0"),
        ("message", "step 1"),
        ("message", "step 2"),
    ]
    assert events[3][1] == "result" and json.loads(events[3][2]) == {"done": True} and len(events) == 4
    assert events[1][0] - events[0][0] > 0.2, "each line is sent as it is printed, not at the end"
    status, body = http_get(ip)
    assert (status, json.loads(body)) == (200, {"done": True}), "without the Accept header, the return value alone"
    assert eventually(lambda: "stdout step 2" in daemon.faas("logs", name).stdout), "the lines reach the log too"

    ip = deploy(
        daemon,
        f"streamfail-{lang.runtime}",
        "--code",
        str(write(tmp_path, f"f{lang.ext}", failing)),
        runtime=lang.runtime,
    )
    events = sse_events(ip)
    assert events[0][1:] == ("message", "1") and events[1][1] == "error"
    assert json.loads(events[1][2])["error"] == error


def gateway(method: str, path: str, body: bytes | None = None, host: str = "127.0.0.1") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", GATEWAY_PORT, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Host": host, "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@by_language
def test_the_gateway_routes_by_path_and_the_function_sees_the_path_after_it(
    daemon: Daemon, tmp_path: Path, lang: Lang
) -> None:
    code = code_of(
        lang,
        "def handler(event, context):\n    return {'path': context.path, 'event': event}\n",
        "module.exports = (event, context) => ({ path: context.path, event });\n",
    )
    name = f"paths-{lang.runtime}"
    deploy(daemon, name, "--code", str(write(tmp_path, f"paths{lang.ext}", code)), runtime=lang.runtime)
    status, body = gateway("POST", f"/function/{name}/a/b?x=1", b'{"k": 1}')
    assert status == 200 and json.loads(body) == {"path": "/a/b", "event": {"k": 1}}
    assert json.loads(gateway("POST", f"/function/{name}", b"{}")[1])["path"] == "/"
    # GraalFaaS: POST /invoke/{id} with the event as the body, and GET /health.
    assert json.loads(gateway("POST", f"/invoke/{name}", b'{"name": "World"}')[1]) == {
        "path": "/",
        "event": {"name": "World"},
    }
    assert gateway("GET", "/health") == (200, b'{"status": "UP"}')
    # Host routing still wins: a function reached by its name keeps every path of its own.
    assert json.loads(gateway("POST", "/function/other/x", b"{}", host=name)[1])["path"] == "/function/other/x"
    status, body = gateway("GET", "/function/nosuch/")
    assert status == 404 and b"no function named 'nosuch'" in body
    status, body = gateway("GET", "/function/nosuch/")
    assert status == 404 and b"no function named 'nosuch'" in body


@by_language
def test_go_faas_run_by_path_on_the_gateway(daemon: Daemon, lang: Lang) -> None:
    code = code_of(lang, 'return {"result": event["a"] * event["b"]}', "return { result: event.a * event.b };")
    path = f"calc/mul-{lang.runtime}"
    upload = {"path": path, "language": lang.language, "code": code}
    assert post_control(daemon, "/upload", upload)[0] == 200
    status, body = gateway("POST", f"/run/{path}", json.dumps({"input": {"a": 10, "b": 5}}).encode())
    assert (status, json.loads(body)) == (200, {"data": {"result": 50}, "type": "json"})
    status, body = gateway("POST", f"/run/{path}", json.dumps({"input": '{"a": 2, "b": 3}'}).encode())
    assert json.loads(body) == {"data": {"result": 6}, "type": "json"}, "input as JSON text, as go-faas takes it"


def test_go_faas_runs_the_version_uploaded_at_a_timestamp(daemon: Daemon) -> None:
    upload = {"path": "calc/which", "language": "python", "code": "return 'first'"}
    status, first = post_control(daemon, "/upload", upload)
    assert status == 200
    while int(time.time()) == first["version"]:  # go-faas's versions are whole seconds
        time.sleep(0.05)
    status, second = post_control(daemon, "/upload", upload | {"code": "return 'second'"})
    assert status == 200 and second["version"] > first["version"]
    run = json.dumps({"input": {}}).encode()
    assert json.loads(gateway("POST", f"/run/calc/which?version={first['version']}", run)[1])["data"] == "first"
    assert json.loads(gateway("POST", f"/run/calc/which?version={second['version']}", run)[1])["data"] == "second"
    assert json.loads(gateway("POST", "/run/calc/which", run)[1])["data"] == "second", "the latest, by default"
    status, body = gateway("POST", "/run/calc/which?version=1000000000", run)
    assert status == 404 and b"'calc-which' has no version uploaded at 1000000000" in body
    assert str(first["version"]).encode() in body, "the answer lists the kept versions' timestamps"
    status, body = gateway("POST", "/run/calc/which?version=yesterday", run)
    assert status == 400 and b"one Unix timestamp" in body


def test_a_graalfaas_manifest_with_dependencies_and_invoke_by_id(daemon: Daemon) -> None:
    result = daemon.faas("new", "--manifest", str(SOURCE / "graal" / "hello-deps.jsonc"))
    assert result.returncode == 0, result.stderr
    status, body = gateway("POST", "/invoke/hello-deps", b'{"name": "PyUser"}')
    assert (status, body) == (200, b"Hello, PyUser!"), "a one-argument handler(event), as GraalFaaS calls it"
    described = json.loads(daemon.faas("describe", "hello-deps", "--json").stdout)
    assert (described["runtime"], described["entry"]) == ("python", "handler.py")


@runc_only
@pytest.mark.parametrize(
    ("manifest", "name", "entry"),
    [("hello-deps.jsonc", "hello-deps-js", "index.js"), ("hello-esm.jsonc", "hello-esm", "index.mjs")],
)
def test_graalfaas_javascript_manifests_a_declared_handler_with_require_and_an_es_module(
    daemon: Daemon, manifest: str, name: str, entry: str
) -> None:
    """GraalFaaS's own JavaScript examples: ``function handler(event)`` that requires a dependency
    by name, and an ES module (``jsEvalAsModule``) exporting ``handler``."""
    result = daemon.faas("new", "--manifest", str(SOURCE_JS / "graal" / manifest))
    assert result.returncode == 0, result.stderr
    status, body = gateway("POST", f"/invoke/{name}", b'{"name": "World"}')
    assert (status, json.loads(body)) == (200, {"message": "Hello, World!"})
    described = json.loads(daemon.faas("describe", name, "--json").stdout)
    assert (described["runtime"], described["entry"]) == ("node", entry)


def tar_of(files: dict[str, bytes]) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


@runc_only
def test_a_functron_job_runs_its_files_with_stdin_and_a_timeout(daemon: Daemon) -> None:
    """Functron's request, as its README gives it, on the python runtime."""
    main = b"import sys\nprint('read', sys.stdin.read(), 'from', open('/data/lib/word.txt').read())\n"
    job = {
        "FnName": "my-example-function",
        "DockerFile": "FROM python\nENV GREETING=hi\nCMD python3 /data/main.py",
        "TarFile": tar_of({"main.py": main, "lib/word.txt": b"the tar"}),
        "Stdin": "Hello!",
        "Timeout": 5.0,
    }
    status, answer = post_control(daemon, "/v1/jobs", job)
    assert status == 200 and answer["stdout"] == "read Hello! from the tar\n" and answer["exit_code"] == 0
    writes = job | {"DockerFile": 'FROM python\nCMD ["python3", "-c", "open(\'/data/x\', \'w\')"]'}
    status, answer = post_control(daemon, "/v1/jobs", writes)
    assert answer["exit_code"] == 1 and "Read-only file system" in answer["stderr"], "/data is read-only"
    slow = job | {"DockerFile": "FROM python\nCMD sleep 30", "Timeout": 1}
    status, answer = post_control(daemon, "/v1/jobs", slow)
    assert status == 200 and answer["timed_out"] is True and answer["exit_code"] is None
    status, refused = post_control(daemon, "/v1/jobs", job | {"DockerFile": "FROM python\nRUN rm -rf /\nCMD true"})
    assert status == 400 and "RUN is not taken" in refused["error"]
    escaping = job | {"TarFile": tar_of({"../../etc/evil": b"x"})}
    status, refused = post_control(daemon, "/v1/jobs", escaping)
    assert status == 400 and "evil" in refused["error"]


@runc_only
def test_a_job_runs_on_a_deployed_functions_image_that_has_no_mount_points_for_it(
    daemon: Daemon, busybox_image: Callable[..., Path]
) -> None:
    """A busybox image has neither /data nor /faas: the job's own read-only layer brings them,
    and the function's rootfs, shared by its containers, is never written."""
    ip = daemon.deploy("bbjob", busybox_image("served as before"))
    job = {
        "FnName": "on-an-image",
        "DockerFile": "FROM function:bbjob\nENV WHO=busybox\nCMD echo $WHO read $(cat) and $(cat word.txt); pwd",
        "TarFile": tar_of({"word.txt": b"the tar"}),
        "Stdin": "stdin",
        "Timeout": 5,
    }
    status, answer = post_control(daemon, "/v1/jobs", job)
    assert status == 200 and answer["exit_code"] == 0, answer
    assert answer["stdout"] == "busybox read stdin and the tar\n/data\n"
    writes = job | {"DockerFile": "FROM function:bbjob\nCMD touch /data/x || touch /x || echo none written"}
    status, answer = post_control(daemon, "/v1/jobs", writes)
    assert answer["stdout"] == "none written\n" and "Read-only file system" in answer["stderr"]
    slow = job | {"DockerFile": "FROM function:bbjob\nCMD sleep 30", "Timeout": 1}
    status, answer = post_control(daemon, "/v1/jobs", slow)
    assert status == 200 and answer["timed_out"] is True, "the same timeout as on a runtime"
    rootfs = daemon.state_dir / "images" / "bbjob" / "1" / "rootfs"
    assert not (rootfs / "data").exists() and not (rootfs / "faas").exists(), "the function's rootfs is unchanged"
    assert http_get(ip) == (200, b"served as before\n")
    assert "/job-" not in Path("/proc/self/mountinfo").read_text(), "each job's overlay is unmounted after it"
    status, refused = post_control(daemon, "/v1/jobs", job | {"DockerFile": "FROM function:nosuch\nCMD true"})
    assert status == 404 and "no function named 'nosuch'" in refused["error"]


@runc_only
def test_node_refuses_fork_mode_and_leaves_nothing(daemon: Daemon, tmp_path: Path) -> None:
    code = write(tmp_path, "f.js", "return 1;\n")
    before = sorted((daemon.state_dir / "images").iterdir())
    result = daemon.faas("new", "js-forked", "--runtime", "node", "--code", str(code), "--sandbox", "fork")
    assert result.returncode == 1 and "cannot run with --sandbox fork" in result.stderr, result.stderr
    assert "--sandbox runc" in result.stderr and "js-forked" not in daemon.faas("list").stdout
    assert sorted((daemon.state_dir / "images").iterdir()) == before


@runc_only
def test_node_containers_are_reused_and_failures_answer_as_for_any_handler(daemon: Daemon, tmp_path: Path) -> None:
    """The channel goes through the same container life: reuse, 502 for a handler gone without a
    word, 504 at the deadline, each in the function's log."""
    counter = write(tmp_path, "count.js", "let served = 0;\nmodule.exports = () => ++served;\n")
    ip = deploy(daemon, "counter", "--code", str(counter), "--reuse", "3", "--warm", "0", runtime="node")
    counts: list[int] = []
    while len(counts) < 9 and counts[-3:] != [1, 2, 3]:
        status, body = http_get(ip)
        assert status == 200
        counts.append(int(body))
        # A connection is logged once its container is done with it: ready for the next, or gone.
        served = len(counts)
        assert eventually(lambda served=served: daemon.faas("logs", "counter").stdout.count("outcome=served") == served)
    # A container may be let go early (the pool frees slots others wait for), never kept past 3.
    assert counts[-3:] == [1, 2, 3], counts
    assert all(n == 1 or n == previous + 1 for previous, n in zip([0, *counts], counts, strict=False)), counts
    assert http_get(ip) == (200, b"1"), "after three connections, a fresh container"

    gone = write(tmp_path, "gone.js", "module.exports = () => process.exit(0);\n")
    ip = deploy(daemon, "gone", "--code", str(gone), runtime="node")
    status, body = http_get(ip)
    assert status == 502 and b"exited without answering" in body
    slow = write(tmp_path, "slow.js", "module.exports = () => new Promise(() => {});\n")
    ip = deploy(daemon, "slow", "--code", str(slow), "--timeout", "1", runtime="node")
    status, body = http_get(ip)
    assert status == 504 and b"did not answer before its deadline" in body
    assert eventually(lambda: "outcome=deadline_silent" in daemon.faas("logs", "slow").stdout)


@runc_only
def test_node_run_once_streams_each_line_and_item_as_it_comes_then_the_answer(daemon: Daemon, tmp_path: Path) -> None:
    code = (
        "module.exports = async function* (event) {\n  for (let i = 0; i < 3; i++) {\n    console.log(`line ${i}`);\n"
        "    yield { i, t: Date.now() / 1000 };\n    await new Promise((done) => setTimeout(done, 400));\n  }\n"
        "  return 'done';\n};\n"
    )
    source = {"runtime": "node", "files": {"gen.js": code}, "input": None, "stream": True}
    events = post_control_events(daemon, "/v1/run", source)
    assert [(name, data) for _, name, data in events[:6:2]] == [("message", f"line {i}") for i in range(3)]
    items = [json.loads(data) for _, _, data in events[1:6:2]]
    assert [item["i"] for item in items] == [0, 1, 2]
    delays = [arrived - item["t"] for (arrived, _, _), item in zip(events[1:6:2], items, strict=True)]
    print("node run-once SSE delays from yield to arrival (ms):", [round(d * 1000, 2) for d in delays])
    assert all(delay < 0.4 for delay in delays), "each item arrives before the next is made"
    name, answer = events[6][1], json.loads(events[6][2])
    assert (name, answer["result"], answer["exit_code"], len(events)) == ("result", "done", 0, 7)

    path = write(
        tmp_path, "count.js", "for (let i = 0; i < 2; i++) console.log(`step ${i}`);\nreturn { done: true };\n"
    )
    result = daemon.faas("run", "--runtime", "node", "--code", str(path), "--stream")
    lines, _, rest = result.stdout.partition("{")
    assert result.returncode == 0 and lines == "step 0\nstep 1\n", result.stdout
    assert json.loads("{" + rest)["result"] == {"done": True}

    run_now = {
        "language": "javascript",
        "code": "console.log('working');\nreturn { sum: event.a };",
        "input": '{"a": 4}',
    }
    events = post_control_events(daemon, "/run-now", run_now | {"stream": True})
    assert [(name, json.loads(data) if name == "result" else data) for _, name, data in events] == [
        ("message", "working"),
        ("result", {"sum": 4}),
    ]
