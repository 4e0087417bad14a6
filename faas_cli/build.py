"""``faas build DIR -o FILE``: an image of a Python handler, built without Docker.

The image is what ``faas new NAME -f FILE`` deploys: Debian's python3 (cached), then one layer
with the SDK, the app dir and its requirements. See ``faas_cli.imagebuild``.
"""

from __future__ import annotations

from pathlib import Path

import click

from faas_cli.client import ClientError
from faas_cli.imagebuild import BuildError, build_python_image

DEFAULT_CACHE = Path("/var/cache/faasd")


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The image tarball to write."
)
@click.option("--package", multiple=True, metavar="REQ", help="Also install REQ from PyPI (repeatable).")
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_CACHE,
    show_default=True,
    help="Where the Debian base and the wheels are kept between builds.",
)
@click.option("--oci", is_flag=True, help="Write an OCI layout instead of docker save's.")
def build(directory: Path, output: Path, package: tuple[str, ...], cache: Path, oci: bool) -> None:
    """Build an image of the Python handler in DIRECTORY, without Docker.

    DIRECTORY holds app.py (it runs as python3 /app/app.py, beside faas_handler.py) and
    whatever it imports; its requirements.txt and --package come from PyPI as wheels. Archives
    in DIRECTORY (a previous output among them) are left out. The first build makes the Debian
    base with mmdebstrap (about 30 s, as root); later ones take it from --cache, and say so.

    \b
    Example:
      sudo faas build handlers/flask -o flask.tar
      faas new flask -f flask.tar
    """
    if not (directory / "app.py").is_file():
        raise ClientError(f"{directory} has no app.py: faas build makes images of Python handlers (handlers/README.md)")
    try:
        build_python_image(
            output, cache, directory.resolve(), package, oci, say=lambda line: click.echo(line, err=True)
        )
    except BuildError as exc:
        raise ClientError(f"build failed: {exc}") from exc
    size = output.stat().st_size / 1e6
    click.echo(f"Built {output} ({size:.1f} MB): deploy it with faas new NAME -f {output}")
