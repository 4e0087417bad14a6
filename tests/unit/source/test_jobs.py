"""Functron requests, checked before anything runs: the Dockerfile subset, the tar, the limits."""

from __future__ import annotations

import base64

import pytest

from faasd.errors import InvalidRequest
from faasd.source.jobs import STDIN, parse_dockerfile, parse_job

JOB = {"FnName": "f", "DockerFile": "FROM python\nCMD python3 /data/main.py", "Stdin": "", "Timeout": 5}


def test_the_dockerfile_subset() -> None:
    text = "# a job\nFROM python\nENV A=1 B='x y'\nENV C three words\nWORKDIR /tmp\nCMD echo \\\n  hi"
    assert parse_dockerfile(text) == (
        "python",
        ("/bin/sh", "-c", f"exec < {STDIN}\necho    hi"),
        ("A=1", "B=x y", "C=three words"),
        "/tmp",
    )
    exec_form = parse_dockerfile('FROM python\nCMD ["python3", "-c", "print(1)"]')[1]
    assert exec_form == ("/bin/sh", "-c", f'exec "$@" < {STDIN}', "sh", "python3", "-c", "print(1)")


def test_a_job_names_a_runtime_or_a_deployed_function() -> None:
    on_runtime = parse_job(JOB)
    assert (on_runtime.runtime, on_runtime.function) == ("python", None)
    on_function = parse_job(JOB | {"DockerFile": "FROM function:hello\nCMD cat /data/x"})
    assert (on_function.runtime, on_function.function) == (None, "hello")


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"DockerFile": "FROM python\nRUN apt-get install x\nCMD true"}, "RUN is not taken"),
        ({"DockerFile": "FROM python\nADD . /app\nCMD true"}, "ADD is not taken"),
        ({"DockerFile": "FROM python"}, "needs FROM"),
        ({"DockerFile": "CMD true"}, "needs FROM"),
        ({"DockerFile": "FROM python\nCMD []"}, "non-empty array"),
        ({"DockerFile": "FROM python\nENV 1A=x\nCMD true"}, "is not NAME=VALUE"),
        ({"TarFile": "not base64!"}, "TarFile is not base64 of a tar"),
        ({"TarFile": base64.b64encode(b"not a tar" * 100).decode()}, "TarFile is not base64 of a tar"),
        ({"Timeout": 0}, "Timeout is seconds"),
        ({"Timeout": 301}, "Timeout is seconds"),
        ({"Timeout": "5"}, "Timeout is seconds"),
        ({"Stdin": 5}, "Stdin is a string"),
        ({"Extra": 1}, "unknown field 'Extra'"),
        ({"FnName": None}, "'FnName' is missing"),
        ({"DockerFile": "FROM function:../etc\nCMD true"}, "invalid function name"),
        ({"DockerFile": "FROM function:\nCMD true"}, "invalid function name"),
    ],
)
def test_bad_jobs_are_refused_with_the_reason(change: dict[str, object], said: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_job(JOB | change)
    assert said in refused.value.message
