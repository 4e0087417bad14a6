"""Image references read as docker pull reads them, and the ones no image could have."""

import pytest

from faasd.errors import InvalidRequest
from faasd.images.reference import Reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("hello", "docker.io", "library/hello", "latest", None),
        ("team/app:1", "docker.io", "team/app", "1", None),
        ("127.0.0.1:5000/team/app:1", "127.0.0.1:5000", "team/app", "1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/a/b/c", "localhost:5000", "a/b/c", "latest", None),
        (f"127.0.0.1:5000/app@{DIGEST}", "127.0.0.1:5000", "app", None, DIGEST),
        (f"127.0.0.1:5000/app:2@{DIGEST}", "127.0.0.1:5000", "app", "2", DIGEST),
        ("registry.local:5000/team/app:v1.2-rc_3", "registry.local:5000", "team/app", "v1.2-rc_3", None),
        ("[::1]:5000/app:1", "[::1]:5000", "app", "1", None),
    ],
)
def test_references_are_read_as_docker_reads_them(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    reference = Reference.parse(text)
    assert (reference.registry, reference.repository, reference.tag, reference.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    assert reference.selector == (digest or tag)
    assert Reference.parse(str(reference)) == reference


def test_docker_hub_is_served_under_another_name() -> None:
    assert Reference.parse("hello").api_host == "registry-1.docker.io"
    assert Reference.parse("127.0.0.1:5000/hello").api_host == "127.0.0.1:5000"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "UPPER/app",
        "127.0.0.1:5000/",
        "app:",
        "app:-tag",
        "app@sha256:short",
        "app@md5:" + "a" * 32,
        "127.0.0.1:5000/app/../etc",
        "app:1:2",
        "a" * 400,
        "127.0.0.1:5000/app?x=1",
        "127.0.0.1:5000/app#frag",
        "bad host:5000/app",
    ],
)
def test_malformed_references_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest):
        Reference.parse(text)
