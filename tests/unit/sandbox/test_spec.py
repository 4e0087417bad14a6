import json
from pathlib import Path

from faasd.config import USERNS_IDS
from faasd.images.archive import ImageConfig
from faasd.limits import Limits
from faasd.sandbox.seccomp import AF_VSOCK, REFUSED, seccomp_profile
from faasd.sandbox.spec import (
    CONTROL_SOCKET,
    CONTROL_SOCKET_IN_BUNDLE,
    SHM_BYTES,
    SpecTemplate,
    build_spec,
    process_args,
    process_env,
)

IMAGE = ImageConfig(
    entrypoint=("python3",), cmd=("/app/app.py",), env=("LANG=C.UTF-8",), working_dir="/app", user="1000"
)
ROOTFS = Path("/var/lib/faasd/images/hello/1/rootfs")
BASE = 2_000_000_000


def spec(image: ImageConfig = IMAGE, limits: Limits | None = None) -> dict:
    return build_spec(image, 1000, 1000, limits or Limits(), ROOTFS, "hello", BASE, "hello-abc")


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
    assert config["root"] == {"path": str(ROOTFS), "readonly": True}
    assert config["process"]["noNewPrivileges"] is True
    assert all(caps == [] for caps in config["process"]["capabilities"].values())
    namespaces = {ns["type"] for ns in config["linux"]["namespaces"]}
    assert {"pid", "ipc", "uts", "mount", "network", "cgroup", "user"} <= namespaces
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


def mount_options(config: dict, destination: str) -> list[str]:
    return next(m["options"] for m in config["mounts"] if m["destination"] == destination)


def test_every_writable_tmpfs_is_bounded_by_the_tmp_size() -> None:
    small = spec(limits=Limits(tmp_bytes=1 << 20))
    assert f"size={1 << 20}" in mount_options(small, "/dev/shm")
    assert f"size={SHM_BYTES}" in mount_options(spec(limits=Limits(tmp_bytes=1 << 30)), "/dev/shm")
    assert "ro" in mount_options(small, "/dev"), "/dev holds runc's nodes only"


def test_a_tmp_size_of_zero_is_read_only_not_unlimited() -> None:
    config = spec(limits=Limits(tmp_bytes=0))
    for destination in ("/tmp", "/dev/shm"):
        options = mount_options(config, destination)
        assert "ro" in options and "size=0" not in options, destination


def test_control_socket_is_bind_mounted() -> None:
    mount = next(m for m in spec()["mounts"] if m["destination"] == CONTROL_SOCKET)
    assert mount["source"] == CONTROL_SOCKET_IN_BUNDLE, "relative: runc finds it in each container's bundle"
    assert "bind" in mount["options"]


def test_container_ids_map_to_one_unprivileged_host_range() -> None:
    linux = spec()["linux"]
    expected = [{"containerID": 0, "hostID": BASE, "size": USERNS_IDS}]
    assert linux["uidMappings"] == expected and linux["gidMappings"] == expected


def test_seccomp_refuses_the_dangerous_calls_and_new_user_namespaces() -> None:
    profile = spec()["linux"]["seccomp"]
    assert profile == seccomp_profile()
    refused = {name for rule in profile["syscalls"] if not rule.get("args") for name in rule["names"]}
    required = {"mount", "umount2", "ptrace", "bpf", "keyctl", "add_key", "kexec_load", "kexec_file_load"}
    required |= {"init_module", "finit_module", "delete_module", "unshare", "setns", "open_by_handle_at"}
    required |= {"perf_event_open", "reboot", "swapon", "clone3"}
    assert required <= refused
    clone = next(rule for rule in profile["syscalls"] if rule["names"] == ["clone"])
    assert clone["args"][0]["value"] == 0x10000000 and clone["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"


def test_seccomp_refuses_vsock_sockets_and_the_socketcall_that_would_hide_them() -> None:
    rules = seccomp_profile()["syscalls"]
    vsock = next(rule for rule in rules if rule["names"] == ["socket"])
    assert vsock["args"] == [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_EQ"}]
    assert "socketcall" in REFUSED


def test_seccomp_covers_the_compat_architectures() -> None:
    assert seccomp_profile("x86_64")["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert len(set(REFUSED)) == len(REFUSED)


def test_a_template_renders_the_spec_of_each_container() -> None:
    template = SpecTemplate.of(build_spec(IMAGE, 1000, 1000, Limits(), ROOTFS, "hello", BASE))
    assert json.loads(template.render("hello-abc")) == spec()
    assert json.loads(template.render("hello-def"))["linux"]["cgroupsPath"] == "/faasd/hello-def"


def test_an_image_on_nodes_channel_gets_fd_3_named_and_no_control_socket() -> None:
    node = ImageConfig(entrypoint=(), cmd=("node", "/app.js"), env=("FAAS_HANDOFF=node-ipc",), working_dir="", user="")
    config = spec(node)
    assert "NODE_CHANNEL_FD=3" in config["process"]["env"]
    assert CONTROL_SOCKET not in [mount["destination"] for mount in config["mounts"]]
    assert not any(item.startswith("NODE_CHANNEL_FD=") for item in spec()["process"]["env"])
    assert CONTROL_SOCKET in [mount["destination"] for mount in spec()["mounts"]]
