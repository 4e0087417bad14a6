"""The daemon's memory while it imports images built to make it balloon.

    sudo .venv/bin/python -m bench.hostile_memory

Each case gets a daemon of its own, whose peak RSS (VmHWM) is read after one deploy:

- ``baseline``: the busybox test image, as it is;
- ``env``: its image config carries a 200 MB ``Env`` value (the archive, gzipped, is small);
- ``passwd``: its ``User`` is a name, and its /etc/passwd is 400 MB without a newline.

The ratios are against the baseline of the same run; the answers show what the daemon said.
"""

from __future__ import annotations

import gzip
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.daemon import BenchDaemon, bench_parser
from tools.build_image import build_busybox_image, write_docker_archive, write_oci_archive

ENV_BYTES = 200 * 1000 * 1000
PASSWD_BYTES = 400 * 1000 * 1000
CONFIG = {"config": {"Cmd": ["/bin/hello"]}}


def busybox_layer(scratch: Path) -> Path:
    """The one layer of the busybox test image, as an uncompressed tar."""
    image = scratch / "busybox.tar"
    build_busybox_image(image)
    with tempfile.TemporaryDirectory(dir=scratch) as unpacked:
        subprocess.run(["tar", "-xf", str(image), "-C", unpacked], check=True)
        layer = next(Path(unpacked).glob("*/layer.tar"))
        out = scratch / "busybox-layer.tar"
        layer.rename(out)
    return out


def env_image(scratch: Path, base: Path) -> Path:
    plain = scratch / "env.tar"
    write_docker_archive(plain, [base], {"config": {"Cmd": ["/bin/hello"], "Env": ["X=" + "x" * ENV_BYTES]}}, "env:1")
    out = scratch / "env.tar.gz"
    with open(plain, "rb") as source, gzip.open(out, "wb") as target:
        while chunk := source.read(1 << 20):
            target.write(chunk)
    plain.unlink()
    return out


def passwd_image(scratch: Path, base: Path) -> Path:
    passwd = scratch / "passwd-layer.tar"
    subprocess.run(["truncate", "-s", str(PASSWD_BYTES), str(scratch / "passwd")], check=True)
    subprocess.run(
        ["tar", "-cf", str(passwd), "--owner=0", "--group=0", "--transform=s,^,etc/,", "-C", str(scratch), "passwd"],
        check=True,
    )
    out = scratch / "passwd.tar"
    write_oci_archive(out, [base, passwd], {"config": {"Cmd": ["/bin/hello"], "User": "app"}}, "passwd:1")
    passwd.unlink()
    return out


def main() -> None:
    bench_parser(__doc__).parse_args()
    with tempfile.TemporaryDirectory(prefix="faasd-bench-") as tmp:
        scratch = Path(tmp)
        scratch.chmod(0o711)
        base = busybox_layer(scratch)
        baseline = scratch / "baseline.tar"
        write_docker_archive(baseline, [base], CONFIG, "baseline:1")
        cases: dict[str, Callable[[], Path]] = {
            "baseline": lambda: baseline,
            "env": lambda: env_image(scratch, base),
            "passwd": lambda: passwd_image(scratch, base),
        }
        print(f"{'case':<10} {'upload MB':>10} {'peak RSS MiB':>13} {'x baseline':>11}  answer")
        peaks: dict[str, float] = {}
        for number, (name, build) in enumerate(cases.items()):
            image = build()
            with BenchDaemon(scratch / f"daemon-{number}") as daemon:
                answer = daemon.try_deploy(name, image)
                peaks[name] = daemon.memory_kib()["VmHWM"] / 1024
            ratio = peaks[name] / peaks["baseline"]
            shown = answer.splitlines()[0][:90] if answer else "deployed"
            print(f"{name:<10} {image.stat().st_size / 1e6:>10.2f} {peaks[name]:>13.1f} {ratio:>10.2f}x  {shown}")


if __name__ == "__main__":
    main()
