"""``faas new --pull`` against a real registry (docker-registry with htpasswd auth, on loopback):
manifests, indexes and layers as registries serve them, credentials from ``faas login`` or a
Docker config.json, and every way a pull can fail leaving nothing behind."""

from __future__ import annotations

import base64
import hashlib
import json
import platform as host
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faasd.images.archive import ARCH_NAMES
from tests.integration.conftest import Daemon, daemon_range, http_get
from tests.integration.faulty import deployed
from tests.integration.test_layers import app_image, base_layer  # noqa: F401  # base_layer: a fixture
from tools.build_image import DEFAULT_PATH
from tools.local_registry import OCI_INDEX, OCI_MANIFEST, PASSWORD, USER, LocalRegistry, start_registry


def answer(ip: str) -> str:
    status, body = http_get(ip)
    assert status == 200, body
    return body.decode().strip()


def login(daemon: Daemon, registry: str, password: str = PASSWORD) -> None:
    result = daemon.faas("login", registry, "-u", USER, "--password-stdin", input=password.encode())
    assert result.returncode == 0, result.stderr


def leftovers(daemon: Daemon, name: str) -> list[Path]:
    """What a failed pull of ``name`` could have left: uploads, the function's dir, half layers."""
    state = daemon.state_dir
    found = list((state / "uploads").iterdir()) + list((state / "images").glob(f"{name}*"))
    layers = state / "layers"
    return found + (list(layers.glob(".tmp-*")) if layers.exists() else [])


def test_pull_deploys_and_the_same_digest_makes_no_new_version(
    puller: Daemon, registry: LocalRegistry, busybox_image: Callable[..., Path]
) -> None:
    reference = registry.push_archive(busybox_image("pulled one"), "team/hello", "1")
    login(puller, registry.host)
    result = puller.faas("new", "hello", "--pull", reference)
    name, ip, version = deployed(result)
    assert (name, version) == ("hello", 1)
    assert "pulled" in result.stderr  # a line per layer fetched
    assert answer(ip) == "pulled one"
    described = json.loads(puller.faas("describe", "hello", "--json").stdout)
    manifest, _ = registry.manifest("team/hello", "1")
    assert described["image"] == reference
    assert described["pulled"] == f"sha256:{hashlib.sha256(manifest).hexdigest()}"

    again = puller.faas("new", "hello", "--pull", reference)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("hello: same image as version 1, which stays current"), again.stdout
    assert [v["version"] for v in json.loads(puller.faas("versions", "hello", "--json").stdout)["versions"]] == [1]

    registry.push_archive(busybox_image("pulled two"), "team/hello", "1")  # the tag moves
    assert deployed(puller.faas("new", "hello", "--pull", reference))[2] == 2
    assert answer(ip) == "pulled two"
    assert puller.faas("new", "hello", "--pull", reference, "--memory", "64m").stdout.startswith("Deployed")


def test_a_second_function_on_the_same_base_fetches_only_its_own_layer(
    puller: Daemon,
    registry: LocalRegistry,
    base_layer: Path,  # noqa: F811
) -> None:
    first = registry.push_archive(app_image(base_layer, "first"), "team/first", "1")
    second = registry.push_archive(app_image(base_layer, "second"), "team/second", "1")
    login(puller, registry.host)
    deployed(puller.faas("new", "first", "--pull", first))
    result = puller.faas("new", "second", "--pull", second)
    _, ip, _ = deployed(result)
    assert result.stderr.count("held") == 1 and result.stderr.count("pulled") == 1, result.stderr
    assert http_get(ip)[1].startswith(b"second")


def test_docker_config_credentials_travel_with_the_pull_only(
    puller: Daemon, registry: LocalRegistry, busybox_image: Callable[..., Path], tmp_path: Path
) -> None:
    reference = registry.push_archive(busybox_image("from config.json"), "team/config", "1")
    refused = puller.faas("new", "config", "--pull", reference)
    assert refused.returncode == 1 and f"faas login {registry.host}" in refused.stderr, refused.stderr
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    result = puller.faas("new", "config", "--pull", reference, env={"DOCKER_CONFIG": str(tmp_path)})
    assert answer(deployed(result)[1]) == "from config.json"
    assert not (puller.state_dir / "registry-logins.json").exists()


def test_check_refuses_a_pulled_image_whose_handler_exits_and_keeps_the_current_one(
    puller: Daemon, registry: LocalRegistry, busybox_image: Callable[..., Path]
) -> None:
    login(puller, registry.host)
    good = registry.push_archive(busybox_image("checked pull"), "team/checked", "1")
    _, ip, _ = deployed(puller.faas("new", "checked", "--pull", good, "--check"))
    broken = busybox_image("never serves", prelude="echo 'no app in this image' >&2; exit 3")
    refused = puller.faas("new", "checked", "--pull", registry.push_archive(broken, "team/checked", "2"), "--check")
    assert refused.returncode == 1
    assert refused.stderr.endswith(
        "faas: the check of checked version 2 failed: its container exited before its handler connected to "
        "/control.sock (exit status 3); nothing deployed. Its last lines: [stderr] no app in this image\n"
    ), refused.stderr
    assert [v["version"] for v in json.loads(puller.faas("versions", "checked", "--json").stdout)["versions"]] == [1]
    assert sorted(p.name for p in (puller.state_dir / "images" / "checked").iterdir()) == ["1"]
    assert list((puller.state_dir / "uploads").iterdir()) == []
    assert answer(ip) == "checked pull"


def test_a_login_is_kept_root_only_and_a_wrong_one_refused(puller: Daemon, registry: LocalRegistry) -> None:
    wrong = puller.faas("login", registry.host, "-u", USER, "--password-stdin", input=b"wrong")
    assert wrong.returncode == 1 and "refused the credentials" in wrong.stderr, wrong.stderr
    assert not (puller.state_dir / "registry-logins.json").exists()
    login(puller, registry.host)
    kept = puller.state_dir / "registry-logins.json"
    assert kept.stat().st_mode & 0o777 == 0o600 and kept.stat().st_uid == 0
    assert puller.faas("logout", registry.host).returncode == 0
    assert registry.host not in kept.read_text()


def test_an_index_resolves_to_this_platform_and_uncompressed_layers_pull(
    puller: Daemon,
    registry: LocalRegistry,
    base_layer: Path,  # noqa: F811
) -> None:
    """An OCI index (amd64 or arm64 beside s390x) whose image has an uncompressed layer."""
    layer = base_layer.read_bytes()
    diff_id = f"sha256:{hashlib.sha256(layer).hexdigest()}"
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/hello", "from an index"], "Env": [DEFAULT_PATH]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_bytes = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config_bytes),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
    }
    registry.put_blob("team/multi", config_bytes)
    registry.put_blob("team/multi", layer)
    digest = registry.put_manifest("team/multi", "image", manifest, OCI_MANIFEST)
    size = len(json.dumps(manifest).encode())
    here = {"os": "linux", "architecture": host_architecture()}
    entries = [
        {
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": size,
            "platform": {"os": "linux", "architecture": "s390x"},
        },
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": size, "platform": here},
    ]
    registry.put_manifest(
        "team/multi", "both", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, OCI_INDEX
    )
    registry.put_manifest(
        "team/multi", "other", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries[:1]}, OCI_INDEX
    )
    login(puller, registry.host)
    _, ip, _ = deployed(puller.faas("new", "multi", "--pull", f"{registry.host}/team/multi:both"))
    assert answer(ip) == "from an index"
    by_digest = puller.faas("new", "pinned", "--pull", f"{registry.host}/team/multi@{digest}")
    assert answer(deployed(by_digest)[1]) == "from an index"
    other = puller.faas("new", "other", "--pull", f"{registry.host}/team/multi:other")
    assert other.returncode == 1 and "no manifest for linux/" in other.stderr, other.stderr
    assert leftovers(puller, "other") == []


def descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": f"sha256:{hashlib.sha256(data).hexdigest()}", "size": len(data)}


def host_architecture() -> str:
    return ARCH_NAMES.get(host.machine(), host.machine())


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (corrupt, "digest mismatch"),
        (truncate, "truncated"),
    ],
)
def test_a_damaged_blob_is_refused_and_leaves_nothing(
    puller: Daemon,
    registry: LocalRegistry,
    busybox_image: Callable[..., Path],
    damage: Callable[[Path], None],
    message: str,
) -> None:
    body = f"to be damaged: {message}"
    reference = registry.push_archive(busybox_image(body), "team/damaged", message.replace(" ", "-"))
    manifest = json.loads(registry.manifest("team/damaged", message.replace(" ", "-"))[0])
    damage(registry.blob_file(manifest["layers"][0]["digest"]))
    login(puller, registry.host)
    result = puller.faas("new", "damaged", "--pull", reference)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert puller.faas("list", "--json").stdout.strip() == "[]"
    assert leftovers(puller, "damaged") == []


@pytest.mark.parametrize(("change", "message"), [(-1000, "sent more than"), (1000, "truncated")])
def test_a_manifest_that_misstates_a_layer_size_is_refused(
    puller: Daemon, registry: LocalRegistry, busybox_image: Callable[..., Path], change: int, message: str
) -> None:
    registry.push_archive(busybox_image("misstated"), "team/sizes", "1")
    data, media_type = registry.manifest("team/sizes", "1")
    manifest = json.loads(data)
    manifest["layers"][0]["size"] += change
    registry.put_manifest("team/sizes", "misstated", manifest, media_type)
    login(puller, registry.host)
    result = puller.faas("new", "sizes", "--pull", f"{registry.host}/team/sizes:misstated")
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert leftovers(puller, "sizes") == []


def test_unreachable_slow_and_unknown_are_named(puller: Daemon, registry: LocalRegistry) -> None:
    login(puller, registry.host)
    unknown = puller.faas("new", "nope", "--pull", f"{registry.host}/team/nothing:1")
    assert unknown.returncode == 1 and "has no repository or manifest" in unknown.stderr, unknown.stderr
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    down = puller.faas("new", "nope", "--pull", f"127.0.0.1:{port}/team/app:1")
    assert down.returncode == 1 and "cannot reach registry" in down.stderr, down.stderr
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        slow = puller.faas("new", "nope", "--pull", f"127.0.0.1:{silent.getsockname()[1]}/team/app:1")
    assert slow.returncode == 1 and "did not answer in time" in slow.stderr, slow.stderr
    assert leftovers(puller, "nope") == []


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """docker-registry asking for bearer tokens from a token service (distribution's token auth)."""
    registry = start_registry(tmp_path_factory.mktemp("token-registry"), tokens=True)
    yield registry
    registry.stop()


def test_the_bearer_token_flow_anonymous_and_with_credentials(
    make_daemon: Callable[..., Daemon], token_registry: LocalRegistry, busybox_image: Callable[..., Path]
) -> None:
    public = token_registry.push_archive(busybox_image("public by token"), "public/hello", "1")
    private = token_registry.push_archive(busybox_image("private by token"), "team/hello", "1")
    daemon = make_daemon(daemon_range(1), "--insecure-registry", token_registry.host, "--registry-timeout", "5")
    assert answer(deployed(daemon.faas("new", "public", "--pull", public))[1]) == "public by token"
    anonymous = daemon.faas("new", "private", "--pull", private)
    assert anonymous.returncode == 1 and f"faas login {token_registry.host}" in anonymous.stderr, anonymous.stderr
    wrong = daemon.faas("login", token_registry.host, "-u", USER, "--password-stdin", input=b"wrong")
    assert wrong.returncode == 1 and "token service refused the credentials" in wrong.stderr, wrong.stderr
    login(daemon, token_registry.host)
    assert answer(deployed(daemon.faas("new", "private", "--pull", private))[1]) == "private by token"
    assert leftovers(daemon, "x") == []


def test_https_is_checked_against_the_system_cas(
    make_daemon: Callable[..., Daemon],
    busybox_image: Callable[..., Path],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A registry on HTTPS whose certificate no CA signed: refused, until the daemon trusts it
    (here through OpenSSL's SSL_CERT_FILE, as an added system CA would)."""
    registry = start_registry(tmp_path_factory.mktemp("tls-registry"), tls=True)
    try:
        reference = registry.push_archive(busybox_image("over https"), "team/tls", "1")
        doubting = make_daemon(daemon_range(1))
        login = doubting.faas("login", registry.host, "-u", USER, "--password-stdin", input=PASSWORD.encode())
        assert login.returncode == 1 and "cannot speak TLS" in login.stderr, login.stderr
        refused = doubting.faas("new", "tls", "--pull", reference)
        assert refused.returncode == 1 and "certificate verify failed" in refused.stderr, refused.stderr
        monkeypatch.setenv("SSL_CERT_FILE", str(registry.certificate))
        trusting = make_daemon(daemon_range(2))
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        config = tmp_path_factory.mktemp("docker")
        (config / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
        pulled = trusting.faas("new", "tls", "--pull", reference, env={"DOCKER_CONFIG": str(config)})
        assert answer(deployed(pulled)[1]) == "over https"
    finally:
        registry.stop()
