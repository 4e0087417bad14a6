"""Hooks for the whole suite: the ``needs_root`` and ``needs_runc`` markers."""

from __future__ import annotations

import pytest

from tests.needs import require


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture: skip, or under CI fail, a test the host cannot run."""
    require(
        root=item.get_closest_marker("needs_root") is not None,
        runc=item.get_closest_marker("needs_runc") is not None,
    )
