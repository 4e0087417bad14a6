"""Node functions built at deploy time, with the real daemon: package.json installed by npm
offline from tarballs made here, TypeScript compiled by Debian's tsc in a container of the node
runtime; type errors and unknown packages refused, leaving nothing."""

from __future__ import annotations

import http.client
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Daemon, daemon_range, free_port, http_request, start_daemon
from tests.integration.test_source import post_control
from tests.integration.test_source_deps import leftovers
from tools.packages import write_npm_tarball

RANGE = daemon_range(52)
GATEWAY_PORT = free_port()
LEFT = b'const pad = require("faaspad");\nmodule.exports = (text) => pad(String(text), 8);\n'
# go-faas's TypeScript example, as its document gives it: a script body with a type of its own.
GO_FAAS_TYPESCRIPT = """\
interface Event {
  a: number;
  b: number;
}

const result = {
  sum: event.a + event.b,
  product: event.a * event.b
};
return result;
"""
PAD = b'module.exports = (text, width) => text.padStart(width, "*");\n'


@pytest.fixture(scope="module")
def packages(daemon_roots: Path) -> Path:
    """The operator's package directory: faasleft 1.0.0, which needs faaspad ^1.0.0 (there as 1.2.0
    and as 2.0.0, which does not fit). World-readable, as containers read it."""
    directory = Path(tempfile.mkdtemp(prefix="packages-", dir=daemon_roots))
    directory.chmod(0o755)
    left = {"name": "faasleft", "version": "1.0.0", "main": "index.js", "dependencies": {"faaspad": "^1.0.0"}}
    write_npm_tarball(directory, left, {"index.js": LEFT})
    write_npm_tarball(directory, {"name": "faaspad", "version": "1.2.0", "main": "index.js"}, {"index.js": PAD})
    write_npm_tarball(directory, {"name": "faaspad", "version": "2.0.0"}, {"index.js": b"throw new Error('2.0');\n"})
    for path in directory.iterdir():
        path.chmod(0o644)
    return directory


@pytest.fixture(scope="module")
def daemon(daemon_roots: Path, node_runtime_image: Path, packages: Path) -> Iterator[Daemon]:
    daemon = start_daemon(
        daemon_roots, RANGE, "--packages", str(packages), "--gateway", f"127.0.0.1:{GATEWAY_PORT}", "--warm", "1"
    )
    try:
        added = daemon.faas("runtime", "add", "node", "-f", str(node_runtime_image))
        assert added.returncode == 0, added.stderr
        yield daemon
    finally:
        daemon.stop()


def post(ip: str, event: object) -> tuple[int, bytes]:
    status, _, body = http_request(ip, "POST", "/", json.dumps(event).encode(), {"Content-Type": "application/json"})
    return status, body


def files(directory: Path, contents: dict[str, str]) -> Path:
    directory.mkdir()
    for name, text in contents.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory


def new(daemon: Daemon, name: str, code: Path, entry: str) -> tuple[int, str]:
    result = daemon.faas("new", name, "--runtime", "node", "--code", str(code), "--entry", entry)
    return result.returncode, result.stderr


def test_package_json_is_installed_at_deploy_time_from_the_operators_tarballs(daemon: Daemon, tmp_path: Path) -> None:
    package = {"name": "fn", "version": "0.0.0", "private": True, "dependencies": {"faasleft": "^1.0.0"}}
    code = files(
        tmp_path / "fn",
        {
            "package.json": json.dumps(package),
            "index.js": 'const left = require("faasleft");\n'
            "module.exports = async (event) => ({ padded: left(event.name), from: require.resolve('faasleft') });\n",
        },
    )
    assert new(daemon, "npmdeps", code, "index.js") == (0, "")
    status, body = post(daemon.faas("ip", "npmdeps").stdout.strip(), {"name": "ab"})
    assert status == 200, body
    answer = json.loads(body)
    assert answer == {"padded": "******ab", "from": "/faas/code/node_modules/faasleft/index.js"}, "1.2.0, not 2.0.0"
    modules = daemon.state_dir / "images" / "npmdeps" / "1" / "rootfs" / "faas" / "code" / "node_modules"
    assert sorted(p.name for p in modules.iterdir()) == ["faasleft", "faaspad"]
    again = daemon.faas("new", "npmdeps", "--runtime", "node", "--code", str(code), "--entry", "index.js")
    assert again.returncode == 0 and "same image as version 1" in again.stdout, "the same install is the same layer"


def test_an_unknown_npm_package_is_refused_with_npms_last_lines(daemon: Daemon, tmp_path: Path) -> None:
    before = leftovers(daemon)
    package = {"name": "fn", "version": "0.0.0", "dependencies": {"no-such-package": "1.0.0"}}
    code = files(tmp_path / "fn", {"package.json": json.dumps(package), "index.js": "module.exports = () => 1;\n"})
    status, said = new(daemon, "npmunknown", code, "index.js")
    assert status != 0 and "npm install" in said and "'no-such-package@1.0.0' is not in this registry" in said, said
    assert daemon.faas("describe", "npmunknown").returncode != 0
    assert leftovers(daemon) == before


def test_a_typescript_function_is_compiled_at_deploy_time_and_served(daemon: Daemon, tmp_path: Path) -> None:
    code = files(
        tmp_path / "fn",
        {
            "index.ts": 'import { greeting } from "./lib/greet";\n'
            "interface Event { name: string }\n"
            "export default async (event: Event, context: { requestId: string }) => greeting(event.name);\n",
            "lib/greet.ts": "export function greeting(name: string): { hello: string } {\n"
            "  return { hello: name.toUpperCase() };\n}\n",
        },
    )
    assert new(daemon, "typed", code, "index.ts") == (0, "")
    assert post(daemon.faas("ip", "typed").stdout.strip(), {"name": "ts"}) == (200, b'{"hello":"TS"}')
    described = json.loads(daemon.faas("describe", "typed", "--json").stdout)
    assert (described["runtime"], described["entry"]) == ("node", "index.js")
    rootfs = daemon.state_dir / "images" / "typed" / "1" / "rootfs" / "faas" / "code"
    assert sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*.*")) == [
        "index.js",
        "index.ts",
        "lib/greet.js",
        "lib/greet.ts",
    ]


def test_a_type_error_is_refused_with_the_compilers_file_line_and_column(daemon: Daemon, tmp_path: Path) -> None:
    before = leftovers(daemon)
    code = files(tmp_path / "fn", {"index.ts": "const n: number = 1;\nconst s: string = n;\nexport default () => s;\n"})
    status, said = new(daemon, "mistyped", code, "index.ts")
    assert status != 0
    assert "index.ts:2:7: error TS2322: Type 'number' is not assignable to type 'string'." in said, said
    assert daemon.faas("describe", "mistyped").returncode != 0
    assert leftovers(daemon) == before


def test_go_faas_typescript_upload_run_and_run_now(daemon: Daemon, tmp_path: Path) -> None:
    script = GO_FAAS_TYPESCRIPT
    status, answer = post_control(daemon, "/upload", {"path": "ts/math", "language": "typescript", "code": script})
    assert status == 200 and answer["path"] == "ts/math" and answer["language"] == "typescript", answer
    conn = http.client.HTTPConnection("127.0.0.1", GATEWAY_PORT, timeout=30)
    conn.request("POST", "/run/ts/math", json.dumps({"input": {"a": 3, "b": 4}}), {"Host": "127.0.0.1"})
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {"data": {"sum": 7, "product": 12}, "type": "json"})
    conn.close()

    run_now = {"language": "typescript", "code": script, "input": '{"a": 5, "b": 10}'}
    assert post_control(daemon, "/run-now", run_now) == (200, {"data": {"sum": 15, "product": 50}, "type": "json"})
    status, refused = post_control(
        daemon, "/upload", {"path": "ts/bad", "language": "typescript", "code": "return x;\n"}
    )
    assert status == 400 and "index.ts:1:8: error TS2304: Cannot find name 'x'." in refused["error"], refused

    (tmp_path / "f.ts").write_text("const n: number = event.n;\nreturn n * 2;\n")
    ran = daemon.faas("run", "--runtime", "node", "--code", str(tmp_path / "f.ts"), "--input", '{"n": 21}')
    assert ran.returncode == 0 and json.loads(ran.stdout)["result"] == 42, ran.stdout + ran.stderr
