import asyncio
from pathlib import Path

import pytest

from faasd.errors import RuncError
from faasd.sandbox.runc import Runc

RUNC = Runc("runc", Path("/run/faasd/runc"))


def test_run_args_keep_runc_in_the_foreground() -> None:
    assert RUNC.run_args("hello-1", Path("/b")) == [
        "runc",
        "--root",
        "/run/faasd/runc",
        "run",
        "--bundle",
        "/b",
        "hello-1",
    ]


def test_kill_delete_list_args() -> None:
    assert RUNC.kill_args("c") == ["runc", "--root", "/run/faasd/runc", "kill", "c", "KILL"]
    assert RUNC.kill_args("c", "TERM")[-1] == "TERM"
    assert RUNC.delete_args("c") == ["runc", "--root", "/run/faasd/runc", "delete", "--force", "c"]
    assert RUNC.list_args() == ["runc", "--root", "/run/faasd/runc", "list", "--format", "json"]


@pytest.mark.needs_root
@pytest.mark.needs_runc
def test_real_runc_lists_nothing_and_reports_failures(tmp_path: Path) -> None:
    runc = Runc("runc", tmp_path / "root")

    async def scenario() -> None:
        assert await runc.container_ids() == []
        with pytest.raises(RuncError) as failure:
            await runc.kill("no-such-container")
        assert failure.value.returncode != 0
        assert "runc kill failed" in failure.value.message
        assert "no-such-container" in failure.value.stderr or "not exist" in failure.value.stderr

    asyncio.run(scenario())


def test_run_args_pass_extra_fds_through_when_asked() -> None:
    argv = RUNC.run_args("hello-1", Path("/b"), extra_fds=1)
    assert argv == ["runc", "--root", "/run/faasd/runc", "run", "--preserve-fds", "1", "--bundle", "/b", "hello-1"]
