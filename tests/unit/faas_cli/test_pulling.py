"""Credentials from a Docker config.json, and a pull's progress as faas prints it."""

import base64
import io
import json
from pathlib import Path

import pytest

from faas_cli.pulling import PullProgress, docker_config_path, docker_credentials

AUTH = base64.b64encode(b"alice:s3:cret").decode()


@pytest.mark.parametrize(
    ("auths", "registry", "expected"),
    [
        ({"127.0.0.1:5000": {"auth": AUTH}}, "127.0.0.1:5000", {"username": "alice", "password": "s3:cret"}),
        ({"https://127.0.0.1:5000": {"auth": AUTH}}, "127.0.0.1:5000", {"username": "alice", "password": "s3:cret"}),
        ({"https://index.docker.io/v1/": {"auth": AUTH}}, "docker.io", {"username": "alice", "password": "s3:cret"}),
        (
            {"127.0.0.1:5000": {"username": "bob", "password": "pw"}},
            "127.0.0.1:5000",
            {"username": "bob", "password": "pw"},
        ),
        ({"127.0.0.1:5001": {"auth": AUTH}}, "127.0.0.1:5000", None),
        ({"127.0.0.1:5000": {"auth": "not base64!"}}, "127.0.0.1:5000", None),
        ({"127.0.0.1:5000": {}}, "127.0.0.1:5000", None),
    ],
)
def test_credentials_come_from_the_auths_entry(
    tmp_path: Path, auths: dict[str, object], registry: str, expected: dict[str, str] | None
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": auths}))
    assert docker_credentials(registry, config) == expected


def test_no_config_means_no_credentials(tmp_path: Path) -> None:
    assert docker_credentials("127.0.0.1:5000", tmp_path / "missing.json") is None
    assert docker_config_path({"DOCKER_CONFIG": "/cfg"}) == Path("/cfg/config.json")
    assert docker_config_path({"HOME": "/home/u"}) == Path("/home/u/.docker/config.json")


def test_progress_without_a_terminal_prints_a_line_per_layer() -> None:
    out = io.StringIO()
    events = [
        {
            "event": "resolved",
            "reference": "r/a:1",
            "digest": "sha256:" + "0" * 64,
            "changed": True,
            "layers": [
                {"digest": "sha256:" + "1" * 64, "size": 2000, "held": True},
                {"digest": "sha256:" + "2" * 64, "size": 3000, "held": False},
            ],
        },
        {"event": "layer", "digest": "sha256:" + "2" * 64, "size": 3000, "done": 1000},
        {"event": "layer", "digest": "sha256:" + "2" * 64, "size": 3000, "done": 3000},
        {"event": "deployed"},
    ]
    assert list(PullProgress(out, live=False).track(events)) == events
    assert out.getvalue().splitlines() == [
        "r/a:1: sha256:" + "0" * 64,
        "sha256:111111111111  held (2.0 kB)",
        "sha256:222222222222  pulled (3.0 kB)",
    ]


def test_progress_at_a_terminal_redraws_one_line_per_layer_in_place() -> None:
    out = io.StringIO()
    layer = "sha256:" + "3" * 64
    events = [
        {
            "event": "resolved",
            "reference": "r/a:1",
            "digest": "sha256:" + "0" * 64,
            "changed": True,
            "layers": [{"digest": layer, "size": 3000, "held": False}],
        },
        {"event": "layer", "digest": layer, "size": 3000, "done": 1500},
        {"event": "layer", "digest": layer, "size": 3000, "done": 3000},
    ]
    list(PullProgress(out, live=True).track(events))
    drawn = out.getvalue()
    assert "sha256:333333333333  1.5 kB / 3.0 kB" in drawn
    assert drawn.count("\x1b[1A") == 2  # each redraw goes back up over the one line drawn
    assert drawn.endswith("\r\x1b[2Ksha256:333333333333  pulled (3.0 kB)\n")
