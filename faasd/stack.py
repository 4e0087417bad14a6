"""Stack files: the functions a daemon should serve, declared in YAML, as ``faas apply`` reads them.

The shape is that of the OpenFaaS stack files people already write, where the concepts match::

    version: 1.0
    provider:
      name: faasd
    functions:
      hello:
        image: 127.0.0.1:5000/team/hello:1   # pulled by the daemon (faas new --pull)
        environment:
          GREETING: hi
        limits:
          memory: 128Mi
          cpu: 500m
      report:
        archive: images/report.tar            # or an image tarball, beside this file
        tag: report:2                         # the image to take from it, if it holds several
        limits: {timeout: 5, tmp_size: 16m}
        warm: 0
        sandbox: fork                         # how each connection gets its sandbox

``${NAME}`` and ``${NAME:-default}`` take their values from the environment of ``faas apply``, as
faas-cli's do, so one file serves every node and registry. Everything is checked before
anything is deployed: a key this module does not know (a typo, or
an OpenFaaS key faasd has no use for) is refused with the keys it takes, as is a key given twice.
Values are passed on as the daemon's API takes them, and the daemon checks their ranges.

A function's image comes from exactly one source key (``SOURCES``): a registry reference
(``image``) or an archive (``archive``). Another kind of source is one more entry there, one
more ``Source`` class, and one more way for ``faas apply`` to deploy it. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from faasd.errors import FaasError, InvalidRequest
from faasd.images.reference import Reference
from faasd.registry import validate_name

MAX_STACK_BYTES = 1 << 20
VERSIONS = ("1.0",)
PROVIDERS = ("faasd", "openfaas")
TOP_KEYS = ("version", "provider", "functions")
PROVIDER_KEYS = ("name",)
FUNCTION_KEYS = ("environment", "limits", "warm", "reuse", "sandbox")
# Stack-file limit -> the deploy parameter it sets. memory and cpu are OpenFaaS's names.
LIMIT_KEYS = {
    "memory": "memory",
    "cpu": "cpus",
    "cpus": "cpus",
    "pids": "pids",
    "timeout": "timeout",
    "tmp_size": "tmp_size",
}
ARCHIVE_KEYS = ("tag",)
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class StackError(InvalidRequest):
    """Raised when a stack file is not one ``faas apply`` can follow; names the file and the key."""


@dataclass(frozen=True)
class PullSource:
    """An image the daemon pulls from its registry."""

    reference: str


@dataclass(frozen=True)
class ArchiveSource:
    """An image tarball on the machine that runs ``faas apply``, and the image to take from it."""

    path: Path
    tag: str | None = None


Source = PullSource | ArchiveSource


@dataclass(frozen=True)
class FunctionSpec:
    """One declared function: where its image comes from, and what each version gets."""

    name: str
    source: Source
    environment: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)  # deploy parameters: limits, warm, reuse, sandbox


@dataclass(frozen=True)
class Stack:
    """The functions a stack file declares, by name, in the file's order."""

    functions: dict[str, FunctionSpec]


def _pull(name: str, body: dict[str, Any], _base: Path) -> PullSource:
    reference = _string(body["image"], f"functions.{name}.image")
    try:
        Reference.parse(reference)
    except FaasError as exc:
        raise StackError(f"functions.{name}.image: {exc.message}") from None
    return PullSource(reference)


def _archive(name: str, body: dict[str, Any], base: Path) -> ArchiveSource:
    path = Path(_string(body["archive"], f"functions.{name}.archive"))
    tag = body.get("tag")
    return ArchiveSource(base / path, None if tag is None else _string(tag, f"functions.{name}.tag"))


# The keys that say where a function's image comes from, each with its own keys beside it.
SOURCES: dict[str, tuple[Callable[[str, dict[str, Any], Path], Source], tuple[str, ...]]] = {
    "image": (_pull, ()),
    "archive": (_archive, ARCHIVE_KEYS),
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that gives a key twice (it would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_stack(path: Path, environ: Mapping[str, str] | None = None) -> Stack:
    """The stack in the file ``path``; archives are found relative to its directory."""
    try:
        size = path.stat().st_size
        if size > MAX_STACK_BYTES:
            raise StackError(f"{path}: {size} bytes; a stack file is at most {MAX_STACK_BYTES}")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StackError(f"cannot read the stack file {path}: {exc}") from exc
    try:
        return parse_stack(text, path.parent, environ)
    except StackError as exc:
        raise StackError(f"{path}: {exc.message}") from None


def substitute(text: str, environ: Mapping[str, str]) -> str:
    """``${NAME}`` and ``${NAME:-default}`` replaced from ``environ``, as faas-cli does with
    stack files; a name that is unset and has no default is refused, by name."""

    def value(match: re.Match[str]) -> str:
        name, default = match[1], match[2]
        if name in environ:
            return environ[name]
        if default is None:
            raise StackError(f"${{{name}}} is used but not set: export {name}, or write ${{{name}:-default}}")
        return default

    return VARIABLE.sub(value, text)


def parse_stack(text: str, base: Path, environ: Mapping[str, str] | None = None) -> Stack:
    """The stack ``text`` declares, its ``${NAME}`` taken from ``environ``; ``StackError``
    naming the first key at fault."""
    text = substitute(text, {} if environ is None else environ)
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  # a SafeLoader
    except yaml.YAMLError as exc:
        raise StackError(f"not valid YAML: {exc}") from None
    top = _mapping(document, "the file", TOP_KEYS)
    if "version" in top and str(top["version"]) not in VERSIONS:
        raise StackError(f"version {top['version']!r}: the versions read are {', '.join(VERSIONS)}")
    provider = _mapping(top.get("provider"), "provider", PROVIDER_KEYS, hint=_provider_hint)
    if provider.get("name") not in PROVIDERS:
        raise StackError(f"provider.name must be one of {', '.join(PROVIDERS)}, not {provider.get('name')!r}")
    functions = _mapping(top.get("functions"), "functions")
    specs = {}
    for name, body in functions.items():
        if not isinstance(name, str):
            raise StackError(f"functions: {name!r} is not a function name")
        try:
            validate_name(name)
        except InvalidRequest as exc:
            raise StackError(f"functions.{name}: {exc.message}") from None
        specs[name] = _function(name, body, base)
    return Stack(specs)


def _function(name: str, value: Any, base: Path) -> FunctionSpec:
    where = f"functions.{name}"
    if not isinstance(value, dict):
        raise StackError(f"{where} must be a mapping of keys such as image, environment and limits")
    given = [key for key in SOURCES if key in value]
    if len(given) != 1:
        raise StackError(f"{where} needs exactly one of {', '.join(SOURCES)}, not {len(given)}")
    parse_source, source_keys = SOURCES[given[0]]
    _mapping(value, where, (*FUNCTION_KEYS, given[0], *source_keys), hint=_function_hint)
    environment = _mapping(value.get("environment", {}), f"{where}.environment")
    for key, text in environment.items():
        if not isinstance(text, str | int | float) or isinstance(text, bool):
            raise StackError(f"{where}.environment.{key} must be a string or a number")
    limits = _mapping(value.get("limits", {}), f"{where}.limits", tuple(LIMIT_KEYS))
    settings = {LIMIT_KEYS[key]: _limit(key, text, f"{where}.limits.{key}") for key, text in limits.items()}
    for key in ("warm", "reuse", "sandbox"):
        if key in value:
            settings[key] = _scalar(value[key], f"{where}.{key}")
    return FunctionSpec(
        name,
        parse_source(name, value, base),
        {str(key): str(text) for key, text in environment.items()},
        settings,
    )


def _limit(key: str, value: Any, where: str) -> str:
    text = _scalar(value, where)
    if key == "cpu" and text.endswith("m") and text[:-1].isdigit():
        return str(int(text[:-1]) / 1000)  # Kubernetes millicores, as OpenFaaS writes them
    return text


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise StackError(f"{where} must be a number or a string such as 128m")
    return str(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise StackError(f"{where} must be a non-empty string")
    return value


def _mapping(
    value: Any, where: str, keys: tuple[str, ...] | None = None, hint: Callable[[str], str] = lambda _key: ""
) -> dict[Any, Any]:
    """``value`` as a mapping (``None`` is an empty one) holding no key outside ``keys``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StackError(f"{where} must be a mapping")
    if keys is not None:
        for key in value:
            if key not in keys:
                raise StackError(f"{where}: unknown key {key!r} (the keys are {', '.join(keys)}){hint(str(key))}")
    return value


def _provider_hint(key: str) -> str:
    if key == "gateway":
        return "; faas apply deploys to the daemon that --socket or --host names"
    return ""


def _function_hint(key: str) -> str:
    if key in ("lang", "handler", "build_args"):
        return "; build the image first, and name it with image or archive"
    return ""
