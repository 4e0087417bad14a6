"""A test that needs root or runc is skipped on a developer's machine and fails under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.needs import require

REPO = Path(__file__).resolve().parents[2]


def run_without_runc(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """pytest on the integration suite (to its first failure), on a host whose PATH holds no runc."""
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["PATH"] = str(tmp_path)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "-x", "tests/integration"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_integration_test_fails_under_ci_when_runc_is_missing(tmp_path: Path) -> None:
    result = run_without_runc(tmp_path, ci="true")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout and "needs runc on PATH" in result.stdout, result.stdout
    assert "CI=true" in result.stdout, result.stdout


def test_an_integration_test_is_skipped_off_ci_when_runc_is_missing(tmp_path: Path) -> None:
    result = run_without_runc(tmp_path, ci=None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " skipped" in result.stdout and " passed" not in result.stdout, result.stdout
    assert "needs runc on PATH" in result.stdout, result.stdout


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_require_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="needs runc"):
        require(runc=True)


@pytest.mark.parametrize("value", [None, "", "false"])
def test_require_skips_off_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str | None) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="needs runc"):
        require(runc=True)


def test_require_passes_when_nothing_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    require()
