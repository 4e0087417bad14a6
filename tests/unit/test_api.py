import json

import pytest
from aiohttp.test_utils import make_mocked_request

import faasd.errors as errors
from faasd.api import errors_as_json


def error_classes() -> list[type[errors.FaasError]]:
    found, queue = [], [errors.FaasError]
    while queue:
        cls = queue.pop()
        found.append(cls)
        queue.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("cls", error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_declares_an_error_status(cls: type[errors.FaasError]) -> None:
    assert 400 <= cls.status < 600
    assert cls.__doc__, "each error class says when it is raised"


@pytest.mark.parametrize("cls", [c for c in error_classes() if c is not errors.RuncError], ids=lambda c: c.__name__)
async def test_errors_leave_as_json_with_their_status(cls: type[errors.FaasError]) -> None:
    async def handler(_request):
        raise cls("what to do next")

    response = await errors_as_json(make_mocked_request("GET", "/"), handler)
    assert response.status == cls.status
    assert json.loads(response.body) == {"error": "what to do next"}


async def test_unexpected_errors_are_500_without_internals() -> None:
    async def handler(_request):
        raise KeyError("secret detail")

    response = await errors_as_json(make_mocked_request("GET", "/"), handler)
    assert response.status == 500
    assert "secret" not in response.body.decode()


def test_runc_error_carries_status_and_stderr() -> None:
    error = errors.RuncError("run", 1, "container_linux.go: no such file\n")
    assert error.status == 500 and error.returncode == 1
    assert error.message == "runc run failed with exit status 1: container_linux.go: no such file"
