"""The version routes on the real aiohttp app, the real ``Functions`` and a real SQLite registry."""

import ipaddress
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from faasd import metrics
from faasd.admission import Admission, Starts
from faasd.api import make_app
from faasd.config import Config
from faasd.dispatch import Dispatcher
from faasd.functions import Functions
from faasd.images.archive import ImageConfig
from faasd.images.store import ImageStore
from faasd.images.unpack import UnpackLimits
from faasd.limits import Limits
from faasd.logs import Logs
from faasd.network import Aliases
from faasd.registry import Registry
from faasd.sandbox.runc import Runc

IMAGE_CONFIG = ImageConfig(entrypoint=("/bin/hello",), cmd=("--port", "80"), env=(), working_dir="", user="")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    config = Config(
        state_dir=tmp_path / "state", run_dir=tmp_path / "run", ip_range=ipaddress.IPv4Network("127.93.251.0/29")
    )
    for directory in (config.uploads_dir, config.images_dir, config.run_dir):
        directory.mkdir(parents=True)
    return config


@pytest.fixture
def registry(config: Config) -> Registry:
    """``hello`` with versions 1 to 3 (3 current), registered as a deploy would, each with its rootfs."""
    registry = Registry(config.database_path, config.ip_range)
    for number in (1, 2, 3):
        limits = Limits(pids=10 * number)
        registry.add_version("hello", number, f"hello:{number}", f"sha256:{number}", IMAGE_CONFIG, 0, 0, limits)
        (config.images_dir / "hello" / str(number) / "rootfs").mkdir(parents=True)
    yield registry
    registry.close()


@pytest.fixture
async def api(config: Config, registry: Registry) -> AsyncIterator[TestClient]:
    # The rootfs above belong to whoever runs the test: that is the owner the store expects here.
    store = ImageStore(config.images_dir, UnpackLimits(max_bytes=1 << 20, max_entries=1000), id_base=os.getuid())
    logs = Logs(config.logs_dir, config.logs)
    dispatcher = Dispatcher(config, Runc("runc", config.runc_root), store, Starts(1, 1, 1.0))
    functions = Functions(config, registry, store, Aliases(), dispatcher, Admission(config.admission), logs)
    async with TestClient(TestServer(make_app(config, functions, logs, store.layers), host="127.0.0.1")) as client:
        yield client
    await logs.close()


async def test_versions_lists_every_kept_version_and_marks_the_current_one(api: TestClient) -> None:
    response = await api.get("/v1/functions/hello/versions")
    assert response.status == 200
    body = await response.json()
    assert body["name"] == "hello" and body["current"] == 3
    assert [(v["version"], v["current"], v["image"], v["digest"]) for v in body["versions"]] == [
        (1, False, "hello:1", "sha256:1"),
        (2, False, "hello:2", "sha256:2"),
        (3, True, "hello:3", "sha256:3"),
    ]
    first = body["versions"][0]
    assert first["limits"]["pids"] == 10 and first["ip"] is None
    assert first["entrypoint"] == ["/bin/hello"] and first["cmd"] == ["--port", "80"]


async def test_rollback_goes_to_the_version_before_the_current_then_to_any_kept_one(api: TestClient) -> None:
    response = await api.post("/v1/functions/hello/rollback")
    assert response.status == 200
    assert (await response.json())["version"] == 2 and (await response.json())["image"] == "hello:2"
    assert (await (await api.get("/v1/functions/hello")).json())["version"] == 2
    response = await api.post("/v1/functions/hello/rollback")
    assert (await response.json())["version"] == 1
    response = await api.post("/v1/functions/hello/rollback?version=3")
    assert (await response.json())["version"] == 3


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v1/functions/hello/rollback?version=9", 404, "'hello' has no version 9: the versions kept are 1, 2, 3"),
        ("/v1/functions/hello/rollback?version=0", 400, "is not a version number"),
        ("/v1/functions/hello/rollback?version=two", 400, "is not a version number"),
        ("/v1/functions/hello/rollback?version=1&version=2", 400, "more than once"),
        ("/v1/functions/hello/rollback?to=1", 400, "unknown query parameter 'to'"),
        ("/v1/functions/nope/rollback", 404, "no function named 'nope'"),
        ("/v1/functions/Bad/rollback", 400, "invalid function name"),
    ],
)
async def test_a_refused_rollback_says_why_and_changes_nothing(
    api: TestClient, path: str, status: int, message: str
) -> None:
    response = await api.post(path)
    assert response.status == status
    assert message in (await response.json())["error"]
    assert (await (await api.get("/v1/functions/hello")).json())["version"] == 3


async def test_there_is_nothing_to_roll_back_to_from_the_first_version(api: TestClient) -> None:
    await api.post("/v1/functions/hello/rollback?version=1")
    response = await api.post("/v1/functions/hello/rollback")
    assert response.status == 409
    assert (await response.json())["error"] == "'hello' has no version before 1 to roll back to (faas versions hello)"


async def test_a_version_whose_rootfs_is_gone_is_not_rolled_back_to(api: TestClient, config: Config) -> None:
    (config.images_dir / "hello" / "2" / "rootfs").rmdir()
    response = await api.post("/v1/functions/hello/rollback")
    assert response.status == 500
    assert "the rootfs of version 2 is missing" in (await response.json())["error"]
    assert (await (await api.get("/v1/functions/hello")).json())["version"] == 3


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v1/functions/hello/versions/9/address", 404, "'hello' has no version 9"),
        ("/v1/functions/hello/versions/-1/address", 400, "is not a version number"),
        ("/v1/functions/hello/versions/1/address?x=1", 400, "unknown query parameter 'x'"),
        ("/v1/functions/nope/versions/1/address", 404, "no function named 'nope'"),
    ],
)
async def test_a_refused_version_address_says_why(api: TestClient, path: str, status: int, message: str) -> None:
    response = await api.put(path)
    assert response.status == status
    assert message in (await response.json())["error"]


async def test_an_address_that_cannot_be_served_is_given_back(api: TestClient, registry: Registry) -> None:
    """Here nothing serves ``hello`` (no daemon started it), so its version cannot get an address."""
    response = await api.put("/v1/functions/hello/versions/1/address")
    assert response.status == 500
    assert "'hello' is not being served" in (await response.json())["error"]
    assert registry.version("hello", 1).ip is None
    assert registry.addresses() == {registry.get("hello").ip}


async def test_describe_has_the_versions_and_the_requests_by_status(api: TestClient) -> None:
    before = (await (await api.get("/v1/functions/hello")).json())["requests"]
    metrics.REQUESTS.labels("hello", "handler").inc(3)
    metrics.REQUESTS.labels("hello", "502").inc()
    metrics.REQUESTS.labels("other", "handler").inc()
    body = await (await api.get("/v1/functions/hello")).json()
    counted = {status: count - before.get(status, 0) for status, count in body["requests"].items()}
    assert {status: count for status, count in counted.items() if count} == {"handler": 3, "502": 1}
    assert (body["version"], body["current"], body["image"]) == (3, 3, "hello:3")
    assert [v["version"] for v in body["versions"]] == [1, 2, 3]
    assert body["ip"] == "127.93.251.2"
