"""Stack files as faas apply reads them: OpenFaaS's shape, faasd's keys, and nothing else."""

from pathlib import Path

import pytest

from faasd.stack import ArchiveSource, FunctionSpec, PullSource, StackError, load_stack, parse_stack

BASE = Path("/stacks")

EXAMPLE = """
version: 1.0
provider:
  name: faasd
functions:
  hello:
    image: 127.0.0.1:5000/team/hello:1
    environment:
      GREETING: hi
      RETRIES: 3
    limits:
      memory: 128Mi
      cpu: 500m
  report:
    archive: images/report.tar
    tag: report:2
    limits: {timeout: 5, tmp_size: 16m, pids: 64}
    warm: 0
    reuse: 2
    sandbox: fork
"""


def test_an_openfaas_shaped_file_is_read() -> None:
    stack = parse_stack(EXAMPLE, BASE)
    assert list(stack.functions) == ["hello", "report"]
    assert stack.functions["hello"] == FunctionSpec(
        "hello",
        PullSource("127.0.0.1:5000/team/hello:1"),
        {"GREETING": "hi", "RETRIES": "3"},
        {"memory": "128Mi", "cpus": "0.5"},
    )
    assert stack.functions["report"] == FunctionSpec(
        "report",
        ArchiveSource(BASE / "images/report.tar", "report:2"),
        {},
        {"timeout": "5", "tmp_size": "16m", "pids": "64", "warm": "0", "reuse": "2", "sandbox": "fork"},
    )


def test_an_openfaas_provider_and_no_functions_are_fine() -> None:
    assert parse_stack("provider: {name: openfaas}\nfunctions: {}\n", BASE).functions == {}
    assert parse_stack("provider: {name: faasd}\n", BASE).functions == {}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("provider: {name: faasd}\nfunction: {}\n", "unknown key 'function'"),
        ("provider: {name: faasd, gateway: http://127.0.0.1:8080}\n", "faas apply deploys to the daemon"),
        ("provider: {name: kubernetes}\n", "provider.name"),
        ("version: 2.0\nprovider: {name: faasd}\n", "version"),
        ("provider: {name: faasd}\nfunctions:\n  a: {image: r/a:1, imagee: x}\n", "unknown key 'imagee'"),
        ("provider: {name: faasd}\nfunctions:\n  a: {lang: python3, handler: ./a}\n", "exactly one of image, archive"),
        ("provider: {name: faasd}\nfunctions:\n  a: {image: r/a:1, lang: python3}\n", "build the image first"),
        ("provider: {name: faasd}\nfunctions:\n  a: {image: r/a:1, archive: a.tar}\n", "exactly one"),
        ("provider: {name: faasd}\nfunctions:\n  a: {image: r/a:1, tag: x}\n", "unknown key 'tag'"),
        ("provider: {name: faasd}\nfunctions:\n  a: {image: r/a:1, limits: {memroy: 1m}}\n", "unknown key 'memroy'"),
        ("provider: {name: faasd}\nfunctions:\n  a: {image: r/a:1, limits: {memory: [1]}}\n", "limits.memory"),
        ("provider: {name: faasd}\nfunctions:\n  a: {image: r/a:1, environment: [A=1]}\n", "must be a mapping"),
        ("provider: {name: faasd}\nfunctions:\n  a: {image: r/a:1, environment: {A: {b: 1}}}\n", "environment.A"),
        ("provider: {name: faasd}\nfunctions:\n  a: {image: 'Not A Reference'}\n", "functions.a.image"),
        ("provider: {name: faasd}\nfunctions:\n  Bad_Name: {image: r/a:1}\n", "invalid function name"),
        ("provider: {name: faasd}\nfunctions:\n  a: {image: r/a:1}\n  a: {image: r/b:1}\n", "given twice"),
        ("provider: {name: faasd}\nfunctions:\n  a: {image: r/a:1, warm: true}\n", "functions.a.warm"),
        ("provider: {name: faasd}\nfunctions: [a, b]\n", "functions must be a mapping"),
        ("provider: {name: faasd\n", "not valid YAML"),
        ("!!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_what_faas_apply_cannot_follow_is_refused_by_name(text: str, named: str) -> None:
    with pytest.raises(StackError) as refused:
        parse_stack(text, BASE)
    assert named in refused.value.message


def test_a_file_is_named_in_its_errors_and_archives_are_beside_it(tmp_path: Path) -> None:
    stack_file = tmp_path / "stack.yml"
    stack_file.write_text("provider: {name: faasd}\nfunctions:\n  a: {archive: a.tar}\n")
    assert load_stack(stack_file).functions["a"].source == ArchiveSource(tmp_path / "a.tar")
    stack_file.write_text("provider: {name: faasd}\nextra: 1\n")
    with pytest.raises(StackError, match=str(stack_file)):
        load_stack(stack_file)
    with pytest.raises(StackError, match="cannot read"):
        load_stack(tmp_path / "missing.yml")


def test_variables_come_from_the_environment_as_faas_cli_takes_them() -> None:
    text = "provider: {name: faasd}\nfunctions:\n  a: {image: '${REGISTRY}/team/a:${TAG:-1}'}\n"
    stack = parse_stack(text, BASE, {"REGISTRY": "127.0.0.1:5000"})
    assert stack.functions["a"].source == PullSource("127.0.0.1:5000/team/a:1")
    with pytest.raises(StackError, match="REGISTRY"):
        parse_stack(text, BASE, {})
