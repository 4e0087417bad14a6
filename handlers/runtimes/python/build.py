"""faasd's deploy-time build of a Python function: its requirements.txt installed. Standard library only (3.8+).

faasd runs this once per deploy, in a one-shot container of the function's runtime: the code is
bound read-only at ``/faas/code``, the operator's directory of wheels and sdists read-only at
``/faas/packages``, and ``/faas/deps`` is a size-limited tmpfs. There is no network: pip finds
every package in that directory or fails. What pip says goes to stderr, whose last lines are the
answer to a deploy that fails. On success the installed tree, compiled, is written to stdout as
a tar whose members sit under ``deps/``; faasd lays it into the function's code layer at
``/faas/deps``, on the import path the runtime's wrapper sets up.

    python3 build.py     install /faas/code/requirements.txt, then write the tar to stdout
"""

from __future__ import annotations

import compileall
import os
import py_compile
import subprocess
import sys
import tarfile

CODE_DIR = os.environ.get("FAAS_CODE_DIR", "/faas/code")
DEPS_DIR = os.environ.get("FAAS_DEPS_DIR", "/faas/deps")
PACKAGES_DIR = os.environ.get("FAAS_PACKAGES_DIR", "/faas/packages")
REQUIREMENTS = "requirements.txt"


def install() -> int:
    """pip's exit status, installing the requirements from the packages directory alone."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-index",  # no network: the operator's directory is the index
        "--find-links",
        PACKAGES_DIR,
        "--target",
        DEPS_DIR,
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-compile",  # compiled below, with bytecode that depends on the source alone
        "--progress-bar",
        "off",
        "--requirement",
        os.path.join(CODE_DIR, REQUIREMENTS),
    ]
    env = dict(os.environ, PIP_ROOT_USER_ACTION="ignore", PIP_NO_WARN_SCRIPT_LOCATION="1")
    return subprocess.call(command, stdout=sys.stderr.fileno(), env=env)


def compile_tree() -> None:
    """Compile what pip installed: the rootfs is read-only, so no container could cache it.

    Unchecked-hash bytecode holds no timestamp: the same packages give the same layer, and the
    same layer is stored once. A file that does not compile (a test written for Python 2) is
    left as pip leaves it: it fails when imported, if it ever is."""
    mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
    compileall.compile_dir(DEPS_DIR, quiet=2, invalidation_mode=mode)


def write_tar(out: object) -> None:
    """The installed tree as a tar on ``out``, sorted, so the same tree gives the same bytes."""
    paths = []
    for folder, dirs, files in os.walk(DEPS_DIR):
        paths += [os.path.join(folder, name) for name in dirs + files]
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        tar.add(DEPS_DIR, arcname="deps", recursive=False)
        for path in sorted(paths):
            tar.add(path, arcname="deps/" + os.path.relpath(path, DEPS_DIR), recursive=False)


def main() -> int:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever else writes to stdout is not the tar
    status = install()
    if status != 0:
        print(f"faas build: pip exited with status {status}", file=sys.stderr)
        return 1
    compile_tree()
    write_tar(out)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
