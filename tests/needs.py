"""What a test needs from the host (root, runc), checked the same way for every test.

Without it a test is skipped on a developer's machine; with ``CI=true`` it fails instead, so a
green CI run always means the tests that need root and runc ran.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    """True where CI services say so (GitHub Actions, GitLab CI and others set ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(*, root: bool = False, runc: bool = False) -> list[str]:
    """What of ``root`` and ``runc`` this host lacks, as words for a report."""
    gaps = []
    if root and os.geteuid() != 0:
        gaps.append("root")
    if runc and shutil.which("runc") is None:
        gaps.append("runc on PATH (./test.sh installs it)")
    return gaps


def require(*, root: bool = False, runc: bool = False) -> None:
    """Skip the running test, or fail it under CI, unless the host has what it needs."""
    gaps = missing(root=root, runc=runc)
    if not gaps:
        return
    reason = "needs " + " and ".join(gaps)
    if in_ci():
        pytest.fail(f"{reason}: CI=true, where such a test must run, not skip", pytrace=False)
    pytest.skip(reason)
