"""Environment variables set at deploy time, over the image's own."""

import pytest

from faasd.environment import check_environment, with_environment
from faasd.errors import InvalidRequest
from faasd.images.archive import ImageConfig

CONFIG = ImageConfig(("/bin/app",), (), ("PATH=/bin", "GREETING=hi"), "", "")


def test_a_deploy_overrides_the_image_and_adds_after_it() -> None:
    merged = with_environment(CONFIG, {"GREETING": "hello=world", "MODE": "fast"})
    assert merged.env == ("PATH=/bin", "GREETING=hello=world", "MODE=fast")
    assert with_environment(CONFIG, {}) is CONFIG


@pytest.mark.parametrize(
    "value",
    [[], {"1X": "a"}, {"A-B": "a"}, {"": "a"}, {"A": 1}, {"A": "a\0b"}, {f"V{i}": "" for i in range(300)}],
)
def test_bad_environments_are_refused(value: object) -> None:
    with pytest.raises(InvalidRequest):
        check_environment(value)
