# GraalFaaS's Python example (app/src/main/resources/functions/py/hello.py), with a dependency.
from greeter import greet


def handler(event):
    name = event.get("name", "World")
    return greet(name)
