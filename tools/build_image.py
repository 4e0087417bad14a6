"""Image tarballs for tests and benchmarks, built offline: the busybox images with the static C
handler, and the Python ones ``faas build`` makes (``faas_cli.imagebuild``).

    python3 -m tools.build_image busybox OUT.tar [--body TEXT] [--prelude SHELL] [--oci]
    python3 -m tools.build_image runtime python|node OUT.tar [--cache DIR] [--oci]

Debian's static busybox plus the static C handler (handlers/c/hello.c), one layer; builds in
about a second. The Python images are ``faas build DIR -o OUT.tar``'s. A runtime image (for
``faas runtime add``) is the Debian base with the language's interpreter and its tools: python3
and pip; nodejs with npm and node-typescript. They install a function's requirements.txt or
package.json, and compile its TypeScript, at deploy time in a container of the runtime.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from faas_cli.imagebuild import (
    DEFAULT_PATH,
    FIXED_MTIME,
    HANDLERS,
    SITE_PACKAGES,
    BuildError,
    add_bytes,
    add_dir,
    add_symlink,
    build_python_image,
    debian_node_base,
    debian_python_base,
    normalize,
    run,
    write_docker_archive,
    write_image,
    write_oci_archive,
)

__all__ = [
    "DEFAULT_PATH",
    "FIXED_MTIME",
    "HANDLERS",
    "SITE_PACKAGES",
    "BuildError",
    "build_busybox_image",
    "build_python_image",
    "build_runtime_image",
    "debian_node_base",
    "debian_python_base",
    "main",
    "write_docker_archive",
    "write_oci_archive",
]

BUSYBOX = Path("/bin/busybox")
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
# Debian packages a runtime image has beside python3, by language (node's are in its base recipe).
RUNTIME_PACKAGES = {"python": ("python3-pip",)}
# The command a runtime image runs, by language.
INTERPRETERS = {"python": "python3", "node": "node"}


def build_busybox_image(out: Path, body: str | None = None, oci: bool = False, prelude: str | None = None) -> None:
    """Busybox and the static C handler in one layer; Cmd ``/bin/hello [BODY]``, tag busybox-hello.

    With ``prelude``, busybox sh runs those commands first (to print to stdout or stderr, say)
    and then execs the handler.
    """
    if not BUSYBOX.is_file():
        raise BuildError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    applets = run([str(BUSYBOX), "--list-full"]).split()
    with tempfile.TemporaryDirectory() as tmp:
        hello = _compile_hello(Path(tmp))
        layer = Path(tmp) / "layer.tar"
        with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
            for directory in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "dev", "sys"):
                add_dir(tar, directory)
            add_dir(tar, "tmp", 0o1777)
            tar.add(BUSYBOX, arcname="bin/busybox", filter=normalize)
            tar.add(hello, arcname="bin/hello", filter=normalize)
            for applet in applets:  # at their usual paths, so /usr/bin/env and /sbin/ip work too
                if "/" in applet and applet != "bin/busybox":
                    add_symlink(tar, applet, "/bin/busybox")
            add_bytes(tar, "etc/passwd", PASSWD.encode())
            add_bytes(tar, "etc/group", GROUP.encode())
        cmd = ["/bin/hello"] if body is None else ["/bin/hello", body]
        if prelude is not None:
            cmd = ["/bin/sh", "-c", f'{prelude}\nexec "$@"', "sh", *cmd]
        config = {"config": {"Cmd": cmd, "Env": [DEFAULT_PATH], "WorkingDir": "/"}}
        write_image(out, [layer], config, "busybox-hello:latest", oci)


def _compile_hello(directory: Path) -> Path:
    if shutil.which("gcc") is None:
        raise BuildError("gcc is missing: apt-get install gcc libc6-dev")
    binary = directory / "hello"
    run(["gcc", "-static", "-Os", "-o", str(binary), str(HANDLERS / "c" / "hello.c")])
    return binary


def runtime_base(language: str, cache_dir: Path) -> Path:
    """The runtime's base layer, built once and cached: its Debian packages on a minbase."""
    if language == "node":
        return debian_node_base(cache_dir)
    return debian_python_base(cache_dir, include=RUNTIME_PACKAGES[language])


def build_runtime_image(out: Path, language: str, cache_dir: Path, oci: bool = False) -> None:
    """The Debian base with the language's interpreter and its tools; tag ``<language>-runtime``.

    ``faas runtime add`` lays faasd's wrapper on it; pip (or npm, tsc) prepares a function's code
    at deploy time, in a container of the runtime.
    """
    if language not in INTERPRETERS:
        raise BuildError(f"no runtime recipe for {language!r}: {', '.join(INTERPRETERS)}")
    base = runtime_base(language, cache_dir)
    config = {"config": {"Cmd": [INTERPRETERS[language]], "Env": [DEFAULT_PATH]}}
    write_image(out, [base], config, f"{language}-runtime:latest", oci)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m tools.build_image", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    kinds = parser.add_subparsers(dest="kind", required=True)
    busybox = kinds.add_parser("busybox", help="busybox and the static C handler")
    busybox.add_argument("--body", help="what the C handler answers (default: hello from C)")
    busybox.add_argument("--prelude", help="shell commands run before the handler, e.g. 'echo started >&2'")
    runtime = kinds.add_parser("runtime", help="a runtime image for faas runtime add: Debian and an interpreter")
    runtime.add_argument("language", choices=sorted(INTERPRETERS), help="the interpreter's language")
    runtime.add_argument("--cache", type=Path, default=Path("/var/cache/faasd"), help="where the base layer is kept")
    for kind in (busybox, runtime):
        kind.add_argument("out", type=Path, help="the image tarball to write")
        kind.add_argument("--oci", action="store_true", help="write an OCI layout instead of docker save's")
    options = parser.parse_args(argv)
    try:
        if options.kind == "runtime":
            build_runtime_image(options.out, options.language, options.cache, options.oci)
        else:
            build_busybox_image(options.out, options.body, options.oci, options.prelude)
    except BuildError as exc:
        print(f"build_image: {exc}", file=sys.stderr)
        return 1
    print(f"{options.out} ({options.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
