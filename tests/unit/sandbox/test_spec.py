from pathlib import Path

from faasd.config import Limits
from faasd.images.archive import ImageConfig
from faasd.sandbox.spec import CONTROL_SOCKET, Container, build_spec, process_args, process_env

IMAGE = ImageConfig(
    entrypoint=("python3",), cmd=("/app/app.py",), env=("LANG=C.UTF-8",), working_dir="/app", user="1000"
)
CONTAINER = Container(
    "hello-abc",
    Path("/var/lib/faasd/images/hello/1/rootfs"),
    Path("/run/faasd/bundles/hello-abc/control.sock"),
    "hello",
)


def spec(image: ImageConfig = IMAGE, limits: Limits | None = None) -> dict:
    return build_spec(image, 1000, 1000, limits or Limits(), CONTAINER)


def test_process_comes_from_the_image() -> None:
    process = spec()["process"]
    assert process["args"] == ["python3", "/app/app.py"]
    assert process["cwd"] == "/app"
    assert process["user"] == {"uid": 1000, "gid": 1000}
    assert process["env"][0].startswith("PATH=") and "LANG=C.UTF-8" in process["env"]


def test_image_path_is_kept_and_cwd_defaults_to_root() -> None:
    image = ImageConfig(entrypoint=(), cmd=("/bin/x",), env=("PATH=/opt/bin",), working_dir="", user="")
    assert process_env(image) == ["PATH=/opt/bin"]
    assert process_args(image) == ["/bin/x"]
    assert spec(image)["process"]["cwd"] == "/"


def test_secure_defaults() -> None:
    config = spec()
    assert config["root"] == {"path": str(CONTAINER.rootfs), "readonly": True}
    assert config["process"]["noNewPrivileges"] is True
    assert all(caps == [] for caps in config["process"]["capabilities"].values())
    namespaces = {ns["type"] for ns in config["linux"]["namespaces"]}
    assert {"pid", "ipc", "uts", "mount", "network", "cgroup"} <= namespaces
    assert "/proc/kcore" in config["linux"]["maskedPaths"]
    assert "/proc/sys" in config["linux"]["readonlyPaths"]
    assert config["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]


def test_limits_become_cgroup_resources_and_tmpfs_size() -> None:
    config = spec(limits=Limits(memory_bytes=64 << 20, cpus=0.5, pids=32, tmp_bytes=1 << 20))
    resources = config["linux"]["resources"]
    assert resources["memory"] == {"limit": 64 << 20}
    assert resources["cpu"] == {"quota": 50_000, "period": 100_000}
    assert resources["pids"] == {"limit": 32}
    tmp = next(m for m in config["mounts"] if m["destination"] == "/tmp")
    assert f"size={1 << 20}" in tmp["options"]


def test_control_socket_is_bind_mounted() -> None:
    mount = next(m for m in spec()["mounts"] if m["destination"] == CONTROL_SOCKET)
    assert mount["source"] == str(CONTAINER.control_socket)
    assert "bind" in mount["options"]
