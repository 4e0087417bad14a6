"""The pure parts of the distribution client: reading an authentication challenge."""

import pytest

from faasd.images.distribution import parse_challenge


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        ('Basic realm="faasd-tests"', "basic", {"realm": "faasd-tests"}),
        (
            'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"',
            "bearer",
            {"realm": "https://auth.example/token", "service": "registry.example", "scope": "repository:a/b:pull"},
        ),
        (
            "Bearer realm=https://auth.example/token, service=reg",
            "bearer",
            {"realm": "https://auth.example/token", "service": "reg"},
        ),
        ("", "", {}),
    ],
)
def test_challenges_are_read(header: str, scheme: str, params: dict[str, str]) -> None:
    assert parse_challenge(header) == (scheme, params)
