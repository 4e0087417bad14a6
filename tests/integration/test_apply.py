"""``faas apply``: a stack file made true on the real daemon, once, and not again when nothing changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import Daemon
from tests.integration.test_pull import answer, login
from tools.local_registry import LocalRegistry


def versions(daemon: Daemon) -> dict[str, int]:
    return {f["name"]: f["version"] for f in json.loads(daemon.faas("list", "--json").stdout)}


def test_apply_adds_updates_prunes_and_is_idempotent(
    puller: Daemon, registry: LocalRegistry, busybox_image: Callable[..., Path], tmp_path: Path
) -> None:
    reference = registry.push_archive(busybox_image("pulled by apply"), "team/applied", "1")
    (tmp_path / "images").mkdir()
    archive = busybox_image("uploaded by apply")
    (tmp_path / "images" / "local.tar").symlink_to(archive)
    stack = tmp_path / "stack.yml"

    def declare(greeting: str) -> None:
        stack.write_text(
            f"""
version: 1.0
provider:
  name: faasd
functions:
  pulled:
    image: {reference}
    environment: {{GREETING: {greeting}}}
    limits: {{memory: 64Mi, cpu: 500m}}
  local:
    archive: images/local.tar
    warm: 0
"""
        )

    login(puller, registry.host)
    deployed = puller.deploy("stray", busybox_image("not in the file"))
    declare("hi")
    plan = puller.faas("apply", "-f", str(stack), "--dry-run", "--prune")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines() == [
        f"pulled: create from {reference}",
        f"local: create from {tmp_path / 'images/local.tar'}, if its image or settings differ",
        "stray: remove",
    ]
    assert versions(puller) == {"stray": 1}

    first = puller.faas("apply", "-f", str(stack), "--prune")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("pulled: created (version 1") and lines[1].startswith("local: created (version 1")
    assert lines[2] == "stray: removed" and deployed
    assert answer(puller.faas("ip", "local").stdout.strip()) == "uploaded by apply"
    described = json.loads(puller.faas("describe", "pulled", "--json").stdout)
    assert "GREETING=hi" in described["env"] and described["limits"]["cpus"] == 0.5

    again = puller.faas("apply", "-f", str(stack), "--prune")
    assert again.stdout.splitlines() == ["pulled: unchanged (version 1)", "local: unchanged (version 1)"]
    assert puller.faas("apply", "-f", str(stack), "--dry-run").stdout.splitlines()[0] == "pulled: unchanged"

    declare("hello")  # only the environment differs: a new version of that function alone
    changed = puller.faas("apply", "-f", str(stack))
    assert changed.stdout.splitlines()[0].startswith("pulled: updated (version 2"), changed.stdout
    assert versions(puller) == {"pulled": 2, "local": 1}


def test_a_stack_with_an_unknown_key_changes_nothing(puller: Daemon, tmp_path: Path) -> None:
    stack = tmp_path / "stack.yml"
    stack.write_text("provider: {name: faasd}\nfunctions:\n  a: {image: 127.0.0.1:1/a:1, memory: 64m}\n")
    refused = puller.faas("apply", "-f", str(stack), "--prune")
    assert refused.returncode == 1
    assert "functions.a: unknown key 'memory'" in refused.stderr and str(stack) in refused.stderr
    assert versions(puller) == {}
    assert list((puller.state_dir / "uploads").iterdir()) == []
