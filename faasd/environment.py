"""Environment variables a deploy sets on top of the image's own ``Env``.

They are merged into the version's image config once, at deploy time: a name the image sets
takes the deploy's value, a new name is added after the image's. What a container gets is then
the version's config, as for any image; nothing at run time reads them again. Pure.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from faasd.errors import InvalidRequest
from faasd.images.archive import ImageConfig

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
MAX_VARIABLES = 256
MAX_VALUE = 32 << 10


def check_environment(value: object, what: str = "the environment") -> dict[str, str]:
    """``value`` as a name -> value mapping of strings, refused with what is wrong."""
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} must be an object of NAME: value strings")
    if len(value) > MAX_VARIABLES:
        raise InvalidRequest(f"{what} sets {len(value)} variables (at most {MAX_VARIABLES})")
    for name, text in value.items():
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise InvalidRequest(f"{what}: {name!r} is not a variable name (letters, digits, '_'; not a digit first)")
        if not isinstance(text, str) or "\0" in text or len(text) > MAX_VALUE:
            raise InvalidRequest(f"{what}: the value of {name} must be a string of at most {MAX_VALUE} bytes, no NUL")
    return dict(value)


def with_environment(config: ImageConfig, environment: Mapping[str, str]) -> ImageConfig:
    """``config`` with ``environment`` set over the image's ``Env``, in the image's order."""
    if not environment:
        return config
    left = dict(environment)
    merged = []
    for entry in config.env:
        name = entry.partition("=")[0]
        merged.append(f"{name}={left.pop(name)}" if name in left else entry)
    merged += [f"{name}={value}" for name, value in left.items()]
    return dataclasses.replace(config, env=tuple(merged))
