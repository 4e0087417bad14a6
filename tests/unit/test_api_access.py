"""The real aiohttp app over a real loopback socket: who may call it, and what input it refuses."""

import asyncio
import errno
import functools
import grp
import ipaddress
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from faasd.admission import Admission, Starts
from faasd.api import bind_unix_socket, make_app, running, socket_gid
from faasd.config import Config
from faasd.dispatch import Dispatcher
from faasd.functions import Functions
from faasd.images.store import ImageStore
from faasd.images.unpack import UnpackLimits
from faasd.images.upload import write_failure
from faasd.logs import Logs
from faasd.network import Aliases
from faasd.registry import Registry
from faasd.sandbox.runc import Runc

TOKEN = "k7Qx0-3v_Lr9sYbT2mWzH8nC4pJ6dF1aG5eK0iU7oQ"
MAX_UPLOAD = 4096


@pytest.fixture
def config(tmp_path: Path) -> Config:
    config = Config(
        state_dir=tmp_path / "state",
        run_dir=tmp_path / "run",
        ip_range=ipaddress.IPv4Network("127.93.250.0/29"),
        max_upload_bytes=MAX_UPLOAD,
    )
    for directory in (config.uploads_dir, config.images_dir, config.run_dir):
        directory.mkdir(parents=True)
    return config


@pytest.fixture
async def logs(config: Config) -> AsyncIterator[Logs]:
    logs = Logs(config.logs_dir, config.logs)
    yield logs
    await logs.close()


@pytest.fixture
def store(config: Config) -> ImageStore:
    return ImageStore(config.images_dir, UnpackLimits(max_bytes=1 << 20, max_entries=1000), id_base=config.userns_base)


@pytest.fixture
def functions(config: Config, logs: Logs, store: ImageStore) -> Functions:
    """The real ``Functions``; a request that gets past the checks would touch its registry and store."""
    registry = Registry(config.database_path, config.ip_range)
    dispatcher = Dispatcher(config, Runc("runc", config.runc_root), store, Starts(1, 1, 1.0))
    yield Functions(config, registry, store, Aliases(), dispatcher, Admission(config.admission), logs)
    registry.close()


def state(config: Config, functions: Functions) -> tuple[list[str], list[Path], list[Path]]:
    """What a refused request must leave unchanged: functions, uploads, rootfs."""
    return [f.name for f in functions.all()], list(config.uploads_dir.iterdir()), list(config.images_dir.iterdir())


@pytest.fixture
async def unix_api(config: Config, functions: Functions, logs: Logs, store: ImageStore) -> AsyncIterator[TestClient]:
    """The app the unix socket serves (no token), here on 127.0.0.1 for the test client."""
    async with TestClient(TestServer(make_app(config, functions, logs, store.layers), host="127.0.0.1")) as client:
        yield client


@pytest.fixture
async def tcp_api(config: Config, functions: Functions, logs: Logs, store: ImageStore) -> AsyncIterator[TestClient]:
    """The app the TCP listener serves: every request needs ``TOKEN``."""
    async with TestClient(
        TestServer(make_app(config, functions, logs, store.layers, TOKEN), host="127.0.0.1")
    ) as client:
        yield client


IMAGE = b"any bytes: they must never be read without the token" * 10


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer "},
    ],
    ids=["none", "prefix", "longer", "basic", "no-scheme", "empty"],
)
async def test_deploy_without_the_right_token_is_401_and_deploys_nothing(
    tcp_api: TestClient, config: Config, functions: Functions, headers: dict[str, str]
) -> None:
    response = await tcp_api.post("/v1/functions/hello", data=IMAGE, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "token" in (await response.json())["error"]
    assert state(config, functions) == ([], [], [])


async def test_every_route_of_the_tcp_app_needs_the_token(tcp_api: TestClient) -> None:
    for method, path in [
        ("GET", "/v1/functions"),
        ("GET", "/v1/functions/hello"),
        ("DELETE", "/v1/functions/hello"),
        ("GET", "/healthz"),
        ("POST", "/api/new"),
        ("GET", "/api/ip/hello"),
        ("GET", "/api/list"),
        ("POST", "/v1/layers/lookup"),
        ("GET", "/no/such/route"),
    ]:
        response = await tcp_api.request(method, path)
        assert response.status == 401, (method, path)


async def test_two_authorization_headers_are_refused(tcp_api: TestClient) -> None:
    headers = [("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer other")]
    response = await tcp_api.get("/v1/functions", headers=headers)
    assert response.status == 401


async def test_the_right_token_opens_the_tcp_app(tcp_api: TestClient) -> None:
    response = await tcp_api.get("/v1/functions", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status == 200 and await response.json() == {"functions": []}


async def test_a_wrong_token_is_told_apart_from_a_missing_one(tcp_api: TestClient) -> None:
    missing = await (await tcp_api.get("/healthz")).json()
    wrong = await (await tcp_api.get("/healthz", headers={"Authorization": "Bearer nope"})).json()
    assert "needs a token" in missing["error"] and "Authorization: Bearer" in missing["error"]
    assert "does not match" in wrong["error"]
    assert TOKEN not in missing["error"] + wrong["error"]


async def test_the_unix_socket_app_needs_no_token(unix_api: TestClient) -> None:
    response = await unix_api.get("/healthz")
    assert response.status == 200


LONG = "a" * 400
# (method, path, headers, body) -> (status, part of the message); none of them may change anything.
REFUSED = [
    ("POST", "/v1/functions/Hello", {}, IMAGE, 400, "invalid function name 'Hello'"),
    ("POST", "/v1/functions/..%2F..%2Fetc", {}, IMAGE, 400, "invalid function name '../../etc'"),
    ("POST", "/v1/functions/a%20b", {}, IMAGE, 400, "invalid function name"),
    ("POST", f"/v1/functions/{'a' * 64}", {}, IMAGE, 400, "invalid function name"),
    ("POST", "/v1/functions/hello?tag=a%20b", {}, IMAGE, 400, "the tag 'a b' is not an image reference"),
    ("POST", "/v1/functions/hello?tag=", {}, IMAGE, 400, "the tag '' is not an image reference"),
    ("POST", "/v1/functions/hello?tag=-rf", {}, IMAGE, 400, "the tag '-rf' is not an image reference"),
    ("POST", f"/v1/functions/hello?tag={LONG}", {}, IMAGE, 400, "is not an image reference"),
    (
        "POST",
        "/v1/functions/hello?image=%24(reboot)",
        {},
        IMAGE,
        400,
        "the image '$(reboot)' is not an image reference",
    ),
    ("POST", "/v1/functions/hello?image=a%0Ab", {}, IMAGE, 400, "the image 'a\\nb' is not an image reference"),
    ("POST", "/v1/functions/hello?tga=hello", {}, IMAGE, 400, "unknown query parameter 'tga'"),
    ("POST", "/v1/functions/hello?tag=a&tag=b", {}, IMAGE, 400, "'tag' is given more than once"),
    ("POST", "/v1/functions/hello?memory=lots", {}, IMAGE, 400, "memory: 'lots' is not a size"),
    ("POST", "/v1/functions/hello?pids=0", {}, IMAGE, 400, "pids must be between 1 and 65536"),
    ("POST", "/v1/functions/hello?timeout=1e9", {}, IMAGE, 400, "timeout must be between"),
    ("POST", f"/v1/functions/hello?{'x' * 100}=1", {}, IMAGE, 400, "'" + "x" * 64 + "...'"),
    ("POST", "/v1/functions/hello", {}, b"", 400, "the request has no body"),
    ("POST", "/v1/functions/hello", {}, b"x" * (MAX_UPLOAD + 1), 413, f"declares {MAX_UPLOAD + 1} bytes"),
    ("GET", "/v1/functions?all=1", {}, None, 400, "/v1/functions takes no parameters"),
    ("GET", "/v1/functions/NOPE", {}, None, 400, "invalid function name"),
    ("GET", "/v1/functions/nope", {}, None, 404, "nope"),
    ("GET", "/v1/functions/nope?x=1", {}, None, 400, "unknown query parameter 'x'"),
    ("DELETE", "/v1/functions/.hidden", {}, None, 400, "invalid function name"),
    ("DELETE", "/v1/functions/nope", {}, None, 404, "nope"),
    ("DELETE", "/v1/functions/nope?force=1", {}, None, 400, "unknown query parameter 'force'"),
    ("GET", "/healthz?verbose=1", {}, None, 400, "unknown query parameter"),
    ("POST", "/api/new", {}, IMAGE, 400, "X-Image-Name header is missing"),
    ("POST", "/api/new", {"X-Image-Name": "../x"}, IMAGE, 400, "invalid function name '../x'"),
    ("POST", "/api/new", [("X-Image-Name", "a"), ("X-Image-Name", "b")], IMAGE, 400, "given 2 times"),
    ("POST", "/api/new?tag=x", {"X-Image-Name": "a"}, IMAGE, 400, "/api/new takes no parameters"),
    ("GET", "/api/ip/A", {}, None, 400, "invalid function name"),
    ("GET", "/api/list?x", {}, None, 400, "unknown query parameter 'x'"),
    ("PUT", "/v1/functions/hello", {}, IMAGE, 405, "Method Not Allowed"),
    ("GET", "/v2/functions", {}, None, 404, "Not Found"),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "message"), REFUSED)
async def test_bad_input_is_refused_with_a_message_and_changes_nothing(
    unix_api: TestClient,
    config: Config,
    functions: Functions,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
    message: str,
) -> None:
    response = await unix_api.request(method, path, headers=headers, data=body)
    assert response.status == status
    assert message in (await response.json())["error"]
    assert state(config, functions) == ([], [], [])


async def test_a_chunked_upload_is_counted_as_it_streams(
    unix_api: TestClient, config: Config, functions: Functions
) -> None:
    response = await unix_api.post("/v1/functions/hello", data=b"x" * (MAX_UPLOAD + 1), chunked=True)
    assert response.status == 413
    error = (await response.json())["error"]
    assert "over the 4096 byte limit" in error and "declares" not in error
    assert state(config, functions) == ([], [], [])


async def test_a_valid_reference_reaches_the_import(unix_api: TestClient, config: Config, functions: Functions) -> None:
    """Past every check, the body is read as an image: so the checks above refuse for their own reason."""
    response = await unix_api.post(
        "/v1/functions/hello?tag=registry.example:5000/team/hello:2&image=x@sha256:ab", data=IMAGE
    )
    assert response.status == 400
    assert "not a tar archive" in (await response.json())["error"]
    assert state(config, functions) == ([], [], [])


def test_the_socket_is_bound_with_mode_0660_and_the_group_given(tmp_path: Path) -> None:
    path = tmp_path / "faasd.sock"
    path.write_text("stale")
    with bind_unix_socket(path, os.getgid()) as sock:
        status = path.stat()
        assert stat.S_ISSOCK(status.st_mode) and stat.S_IMODE(status.st_mode) == 0o660
        assert status.st_gid == os.getgid()
        assert [p.name for p in tmp_path.iterdir()] == ["faasd.sock"]
        sock.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))


def test_the_socket_group_is_faas_when_it_exists_else_root() -> None:
    assert socket_gid("no-such-group-for-faasd-tests") == 0
    own = grp.getgrgid(os.getgid())
    assert socket_gid(own.gr_name) == own.gr_gid


async def test_metrics_are_served_in_prometheus_text(unix_api: TestClient) -> None:
    response = await unix_api.get("/metrics")
    assert response.status == 200 and response.content_type == "text/plain"
    assert "# TYPE faasd_requests_total counter" in await response.text()


def error_count(kind: str) -> float:
    return REGISTRY.get_sample_value("faasd_errors_total", {"kind": kind}) or 0.0


async def test_a_client_hanging_up_mid_upload_is_a_cut_upload_not_a_full_disk(
    config: Config, functions: Functions, logs: Logs, store: ImageStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Served as faasd serves it (aiohttp's test server would cancel the handler instead)."""
    before = {kind: error_count(kind) for kind in ("UploadCut", "InsufficientStorage")}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    site = functools.partial(web.TCPSite, host="127.0.0.1", port=port)
    async with running(make_app(config, functions, logs, store.layers), site):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/functions/hello HTTP/1.1\r\nHost: faasd\r\nContent-Length: 4000\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        while not list(config.uploads_dir.iterdir()):
            await asyncio.sleep(0.01)  # the upload is being written
        writer.close()  # the client is gone 1000 bytes into a body of 4000
        await writer.wait_closed()
        while error_count("UploadCut") == before["UploadCut"]:
            await asyncio.sleep(0.01)
    assert error_count("UploadCut") == before["UploadCut"] + 1
    assert error_count("InsufficientStorage") == before["InsufficientStorage"]
    assert "upload cut function=hello bytes=1000" in caplog.text
    assert state(config, functions) == ([], [], [])


@pytest.mark.parametrize(
    ("code", "status"),
    [(errno.ENOSPC, 507), (errno.EDQUOT, 507), (errno.EIO, 500), (errno.EROFS, 500), (errno.EBADF, 500)],
)
def test_only_a_full_disk_or_quota_is_insufficient_storage(tmp_path: Path, code: int, status: int) -> None:
    error = write_failure(OSError(code, os.strerror(code)), tmp_path)
    assert error.status == status and os.strerror(code) in error.message


async def test_a_flood_of_refused_requests_logs_a_few_short_lines(
    tcp_api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(200):
        response = await tcp_api.request("PURGE", "/v1/functions")
        assert response.status == 401
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("api refused")]
    assert 1 <= len(lines) <= 25, len(lines)
    assert all(len(line) < 200 for line in lines)
