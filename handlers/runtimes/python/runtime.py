"""faasd's Python runtime: serves a function deployed from source. Standard library only (3.8+).

faasd lays this file and ``faas_handler.py`` into ``/faas/runtime`` of a runtime image, and the
function's code into ``/faas/code``. The entry file (``FAAS_ENTRY``, relative to the code dir) is
written in one of two styles:

    def handler(event, context):              # a module: handler (FAAS_HANDLER) is called per
        return {"sum": event["a"] + event["b"]}   # request; top-level code runs once per container

    return {"sum": event["a"] + event["b"]}   # a script body: the whole file runs per request,
                                              # with ``event`` and ``context`` in scope

``event`` is the request's JSON body (its text when it is not JSON; the query string as an object
when there is no body); ``context`` has the request id, function, version, deadline, method, path
and headers. The return value is the response: JSON for dicts, lists, numbers, booleans and None,
text for a str, ``application/octet-stream`` for bytes, and ``{"statusCode", "headers", "body"}``
sets those. An exception becomes a 500 ``{"error", "request_id"}``, its traceback goes to the log.
``print`` goes to the log (stdout), never into the response.

    python3 runtime.py           serve connections from /control.sock (main.py does, in a container)
    python3 runtime.py --check   load the code and print {"ok": ...} as JSON (faasd runs it at deploy)
    python3 runtime.py --compile DIR   compile the wrapper into DIR/__pycache__ (when a runtime is added)
    python3 runtime.py --once    call the code once with /faas/io/input.json (faas run)
    python3 runtime.py --once --stream   the same, and each item it yields and line it prints as
                                 {"event": "message", "data": ...} on stdout as it comes (faas run --stream)
"""

from __future__ import annotations

import json
import os
import sys
import time
import types

# Every container of a function pays for the wrapper's imports before it can take a connection:
# only what faas_handler imports anyway is imported here; ast (a script body, a module that does
# not compile) and traceback (an error) are imported where they are needed.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ast
    from collections.abc import Callable
    from typing import Any

CODE_DIR = os.environ.get("FAAS_CODE_DIR", "/faas/code")
DEPS_DIR = os.environ.get("FAAS_DEPS_DIR", "/faas/deps")
IO_DIR = os.environ.get("FAAS_IO_DIR", "/faas/io")
MAX_CAPTURED = 256 * 1024  # of what a run prints, the last bytes come back
SCRIPT_NAME = "__faas_script__"
# The keys of a response shape: a returned dict made only of these (statusCode included) sets them.
SHAPE_KEYS = frozenset({"statusCode", "headers", "body", "isBase64Encoded"})
# Code object flags (inspect.CO_*), without importing inspect in every container.
CO_VARARGS, CO_GENERATOR, CO_COROUTINE, CO_ASYNC_GENERATOR = 0x04, 0x20, 0x80, 0x200


class LoadError(Exception):
    """The code cannot serve: a syntax error, a missing entry or handler, an import that failed."""


class Context:
    """What a handler knows of its request besides the event."""

    def __init__(self, metadata: dict[str, Any], method: str, path: str, headers: dict[str, str]) -> None:
        self.request_id = str(metadata.get("id", ""))
        self.function = str(metadata.get("function", ""))
        self.version = metadata.get("version")
        self.deadline_ms = int(metadata.get("deadline", 0))
        self.method = method
        self.path = path
        self.headers = headers

    def remaining_ms(self) -> int:
        """Milliseconds left before faasd ends the container."""
        return max(0, self.deadline_ms - int(time.time() * 1000))

    def __repr__(self) -> str:
        return f"Context(request_id={self.request_id!r}, function={self.function!r}, version={self.version!r})"


def entry_path() -> str:
    entry = os.environ.get("FAAS_ENTRY", "")
    if not entry:
        raise LoadError("FAAS_ENTRY names no entry file")
    return os.path.join(CODE_DIR, entry)


def has_top_level(tree: ast.Module, kinds: tuple[type, ...]) -> bool:
    """Whether a node of ``kinds`` sits in module scope (not inside a def, lambda or class)."""
    import ast

    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, kinds):
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            pending.extend(ast.iter_child_nodes(node))
    return False


def defines(tree: ast.Module, name: str) -> bool:
    """Whether module scope binds ``name`` (a def, an assignment or an import)."""
    import ast

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store):
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any((a.asname or a.name) == name for a in node.names):
            return True
    return False


def script_function(tree: ast.Module, filename: str) -> types.CodeType:
    """The file's top-level code as the body of ``__faas_script__(event, context)``; lines stay."""
    import ast

    is_async = has_top_level(tree, (ast.Await, ast.AsyncFor, ast.AsyncWith))
    template = ast.parse(f"{'async ' if is_async else ''}def {SCRIPT_NAME}(event, context): pass")
    function = template.body[0]
    assert isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
    function.body = tree.body or [ast.Pass()]
    return compile(ast.fix_missing_locations(template), filename, "exec")


def syntax_message(exc: SyntaxError, entry: str) -> str:
    filename = os.path.relpath(exc.filename, CODE_DIR) if exc.filename and exc.filename.startswith("/") else entry
    return f"{filename}:{exc.lineno}:{exc.offset}: {type(exc).__name__}: {exc.msg}"


def run_module(code: types.CodeType, module: types.ModuleType, name: str, entry: str) -> Callable[..., Any]:
    """Run a module's code; its function ``name``."""
    sys.modules[module.__name__] = module
    exec(code, module.__dict__)
    function = module.__dict__.get(name)
    if not callable(function):
        raise LoadError(f"{entry}: {name} is not a function")
    return function


def load_by_tree(
    source: bytes, path: str, module: types.ModuleType, name: str, entry: str
) -> tuple[str, Callable[..., Any]]:
    """The style and function of code whose module scope never names ``name``, or that does not
    compile as a module: a script body, or code to refuse with the reason."""
    import ast

    tree = ast.parse(source, path)
    if defines(tree, name):
        return "module", run_module(compile(tree, path, "exec"), module, name, entry)
    if has_top_level(tree, (ast.Return, ast.Yield, ast.YieldFrom, ast.Await)):
        exec(script_function(tree, path), module.__dict__)
        return "script", module.__dict__[SCRIPT_NAME]
    raise LoadError(f"{entry} defines no {name}(event, context) and has no top-level return: write one or the other")


def load(name: str) -> tuple[str, Callable[..., Any]]:
    """The style ("module" or "script") and the function to call for each request."""
    path = entry_path()
    entry = os.path.relpath(path, CODE_DIR)
    try:
        with open(path, "rb") as file:
            source = file.read()
    except OSError as exc:
        raise LoadError(f"cannot read the entry file {entry}: {exc.strerror}") from None
    for directory in (DEPS_DIR, CODE_DIR):
        if os.path.isdir(directory):
            sys.path.insert(0, directory)
    module = types.ModuleType("handler")
    module.__file__ = path
    try:
        try:
            code = compile(source, path, "exec")
        except SyntaxError:  # a script body's top-level return, or a mistake: ast tells which
            code = None
        if code is not None and name in code.co_names:  # the common case, decided without ast
            style, function = "module", run_module(code, module, name, entry)
        else:
            style, function = load_by_tree(source, path, module, name, entry)
    except SyntaxError as exc:
        raise LoadError(syntax_message(exc, entry)) from None
    except LoadError:
        raise
    except Exception as exc:
        import traceback

        traceback.print_exc()
        raise LoadError(f"{entry} failed while loading: {type(exc).__name__}: {exc}") from None
    return style, function


def parse_event(method: str, body: bytes, query: dict[str, str]) -> Any:
    """The request's JSON body, its text when it is not JSON, or the query as an object."""
    if not body:
        return dict(query) if method in ("GET", "HEAD", "DELETE") or query else {}
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def adapt(function: Callable[..., Any]) -> Callable[[Any, Context], Any]:
    """``function`` called as ``(event, context)``, whether it takes both or the event alone
    (GraalFaaS's ``handler(event)``)."""
    code = getattr(function, "__code__", None)
    if code is None or code.co_flags & CO_VARARGS:
        return function
    positional = code.co_argcount - (1 if hasattr(function, "__self__") else 0)
    if positional >= 2:
        return function
    if positional == 1:
        return lambda event, _context: function(event)
    return lambda _event, _context: function()


def call(function: Callable[..., Any], event: Any, context: Context) -> Any:
    """Call the handler; a coroutine it returns is run to its end."""
    result = function(event, context)
    if hasattr(result, "__await__"):
        import asyncio  # only for async handlers: its import costs more than the rest of a request

        async def wait() -> Any:
            return await result

        result = asyncio.run(wait())
    return result


def response_parts(result: Any) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
    """Status, headers, body and implied content type of what the handler returned."""
    if isinstance(result, dict) and "statusCode" in result and set(result) <= SHAPE_KEYS:
        status, headers, body = int(result["statusCode"]), result.get("headers") or {}, result.get("body", b"")
        pairs = [(str(k), str(v)) for k, v in headers.items()]
        if isinstance(body, str) and result.get("isBase64Encoded"):
            import base64

            body = base64.b64decode(body)
        _, _, data, implied = response_parts(body) if body not in (None, "", b"") else (0, [], b"", None)
        return status, pairs, data, implied
    if isinstance(result, str):
        return 200, [], result.encode("utf-8"), "text/plain; charset=utf-8"
    if isinstance(result, (bytes, bytearray, memoryview)):
        return 200, [], bytes(result), "application/octet-stream"
    return 200, [], json.dumps(result).encode("utf-8"), "application/json"


def print_user_traceback(exc: BaseException) -> None:
    """The traceback to the log, from the first frame outside this file: the user's code."""
    import traceback

    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)
    sys.stderr.flush()


def by_go_faas(metadata: dict[str, Any]) -> bool:
    """Whether the gateway routed the connection by go-faas's ``/run/PATH`` (the ``prefix`` of its
    handoff metadata), whose body is ``{"input", "stream"}`` and whose answer is ``{"data", "type"}``."""
    prefix = metadata.get("prefix")
    return isinstance(prefix, str) and prefix.startswith("/run/")


def go_faas_event(body: Any) -> tuple[Any, bool]:
    """The event and stream flag of go-faas's ``{"input", "stream"}``; ``input`` may be JSON text."""
    if not isinstance(body, dict):
        return body, False
    event = body.get("input")
    if isinstance(event, str):
        try:
            event = json.loads(event)
        except ValueError:
            pass
    return event, body.get("stream") is True


def is_generator(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` makes a generator or an async generator: it streams."""
    code = getattr(function, "__code__", None)
    return code is not None and bool(code.co_flags & (CO_GENERATOR | CO_ASYNC_GENERATOR))


class LineEvents:
    """``sys.stdout`` while a call streams: each whole line printed is queued as an event, and
    still written to the log."""

    def __init__(self, events: Any, log: Any) -> None:
        self._events = events
        self._log = log
        self._partial = ""

    def write(self, text: str) -> int:
        self._log.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._events.put(("line", line))
        return len(text)

    def flush(self) -> None:
        self._log.flush()


def produce(function: Callable[..., Any], event: Any, context: Context, events: Any) -> None:
    """Call ``function`` and queue what it yields, then its return value (or its error)."""
    try:
        result = function(event, context)
        if hasattr(result, "__anext__"):
            import asyncio

            async def drain() -> None:
                async for item in result:
                    events.put(("item", jsonable(item)))

            asyncio.run(drain())
            value = None
        elif hasattr(result, "__next__") and hasattr(result, "throw"):
            while True:
                try:
                    events.put(("item", jsonable(next(result))))
                except StopIteration as stop:
                    value = stop.value
                    break
        else:
            value = call(lambda *_: result, event, context)
        events.put(("result", jsonable(value)))
    except Exception as exc:
        print_user_traceback(exc)
        events.put(("error", {"error": f"{type(exc).__name__}: {exc}", "request_id": context.request_id}))


def stream(function: Callable[..., Any], event: Any, context: Context) -> Any:
    """Server-Sent Events of one call: each item it yields and each line it prints as a ``data:``
    event, sent the moment it comes, then ``event: result`` with its return value (or ``event:
    error``). The call runs on a thread, so a line is sent while the code still runs."""
    import queue
    import threading

    import faas_handler

    events: Any = queue.Queue()
    log = sys.stdout
    sys.stdout = LineEvents(events, log)
    sys.setswitchinterval(0.0005)  # hand the GIL over soon after an event is queued
    threading.Thread(target=produce, args=(function, event, context, events), daemon=True).start()
    try:
        while True:
            kind, value = events.get()
            if kind in ("item", "line"):
                yield faas_handler.Event(value)
            else:
                yield faas_handler.Event(value, event=kind)
                return
    finally:
        sys.stdout = log


def import_what_calls_need(function: Callable[..., Any]) -> None:
    """Import now what every call of ``function`` would import (asyncio for a coroutine, a thread
    and a queue to stream a generator): a container does it before its connection comes, and a
    template (``--sandbox fork``) once for all its children, each of which would pay it again."""
    flags = getattr(getattr(function, "__code__", None), "co_flags", 0)
    if flags & (CO_COROUTINE | CO_ASYNC_GENERATOR):
        import asyncio  # noqa: F401
    if flags & (CO_GENERATOR | CO_ASYNC_GENERATOR):
        import queue  # noqa: F401
        import threading  # noqa: F401


def make_handle(function: Callable[..., Any]) -> Callable[[Any], Any]:
    """The plain faas_handler app that runs ``function`` for each request."""
    import faas_handler

    import_what_calls_need(function)
    generates = is_generator(function)
    function = adapt(function)

    def handle(request: Any) -> Any:
        headers = {name.lower(): value for name, value in request.headers.items()}
        go_faas = by_go_faas(request.metadata)
        # The path after the gateway's prefix: the SDK took it off (faas_handler's SCRIPT_NAME).
        context = Context(request.metadata, request.method, request.path, headers)
        try:
            event = parse_event(request.method, request.body, request.query)
            wants_stream = "text/event-stream" in headers.get("accept", "")
            if go_faas:
                event, wants_stream = go_faas_event(event)
            if generates or wants_stream:
                return faas_handler.sse(stream(function, event, context))
            result = call(function, event, context)
            if go_faas:
                result = {"data": jsonable(result), "type": "text" if isinstance(result, str) else "json"}
            status, pairs, data, implied = response_parts(result)
        except Exception as exc:
            print_user_traceback(exc)
            error = {"error": f"{type(exc).__name__}: {exc}", "request_id": context.request_id}
            return faas_handler.Response(error, status=500)
        if not any(name.lower() == "content-type" for name, _ in pairs) and implied and data:
            pairs.append(("Content-Type", implied))
        return faas_handler.Response(data, status=status, headers=pairs, content_type=None)

    return handle


def check(name: str) -> int:
    """Load the code as a container would and say on stdout whether it can serve (faasd's deploy check)."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the code prints while loading is not the verdict
    try:
        style, _ = load(name)
    except LoadError as exc:
        out.write(json.dumps({"ok": False, "error": str(exc)}) + "\n")
        out.flush()
        return 1
    out.write(json.dumps({"ok": True, "style": style, "python": "{}.{}.{}".format(*sys.version_info[:3])}) + "\n")
    out.flush()
    return 0


def run_once(name: str, streams: bool = False) -> int:
    """Load the code, call it once with the event in ``FAAS_IO/input.json``, and write
    ``{"result"|"error", "stdout"}`` as one JSON line on stdout (faasd's run-once).

    What the code prints goes to a file under /tmp meanwhile, and comes back as ``stdout``. When
    it ``streams``, each item the code yields and line it prints is first written on stdout as
    ``{"event": "message", "data": ...}``, flushed at once (faasd sends each as an SSE event).
    """
    verdict_out = os.fdopen(os.dup(1), "w")
    captured = os.path.join(os.environ.get("TMPDIR", "/tmp"), "faas-stdout")
    fd = os.open(captured, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.close(fd)
    verdict: dict[str, Any] = {}
    try:
        with open(os.path.join(IO_DIR, "input.json"), "rb") as file:
            event = json.loads(file.read() or b"null")
        metadata = {"id": os.environ.get("FAAS_REQUEST_ID", ""), "function": "", "version": None}
        metadata["deadline"] = int(os.environ.get("FAAS_DEADLINE_MS", "0"))
        _, function = load(name)
        context = Context(metadata, "RUN", "/", {})
        if streams:
            verdict.update(streamed(adapt(function), event, context, verdict_out))
        else:
            verdict["result"] = jsonable(call(adapt(function), event, context))
    except LoadError as exc:
        verdict["error"] = str(exc)
    except Exception as exc:
        print_user_traceback(exc)
        verdict["error"] = f"{type(exc).__name__}: {exc}"
    sys.stdout.flush()
    with open(captured, "rb") as file:
        file.seek(max(0, os.fstat(file.fileno()).st_size - MAX_CAPTURED), 0)
        verdict["stdout"] = file.read().decode("utf-8", "replace")
    verdict_out.write(json.dumps(verdict) + "\n")
    verdict_out.flush()
    return 1 if "error" in verdict else 0


def streamed(function: Callable[..., Any], event: Any, context: Context, out: Any) -> dict[str, Any]:
    """Call ``function`` as ``stream`` does, writing each item and line to ``out`` as an event line;
    the outcome, ``{"result": ...}`` or ``{"error": ...}``."""
    for sent in stream(function, event, context):
        if sent.event is not None:  # the last: result or error
            return {"result": sent.data} if sent.event == "result" else {"error": sent.data["error"]}
        out.write(json.dumps({"event": "message", "data": sent.data}) + "\n")
        out.flush()
    return {"error": "the call ended without a result"}


def jsonable(result: Any) -> Any:
    """A run's result as JSON can carry it: bytes as text (base64 when not UTF-8), others as they are."""
    if isinstance(result, (bytes, bytearray, memoryview)):
        try:
            return bytes(result).decode("utf-8")
        except UnicodeDecodeError:
            import base64

            return base64.b64encode(bytes(result)).decode("ascii")
    json.dumps(result)  # a TypeError here names what cannot be returned
    return result


def compile_wrapper(out_dir: str) -> int:
    """Compile this wrapper and the SDK into ``out_dir/__pycache__`` (faasd adds them to the
    runtime: a read-only rootfs never caches bytecode), as this interpreter names its caches."""
    import importlib.util
    import py_compile

    target = os.path.join(out_dir, "__pycache__")
    os.makedirs(target, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("runtime.py", "faas_handler.py"):
        source = os.path.join(here, name)
        cached = os.path.basename(importlib.util.cache_from_source(source))
        mode = py_compile.PycInvalidationMode.UNCHECKED_HASH  # no stat of the source, which never changes
        py_compile.compile(source, cfile=os.path.join(target, cached), doraise=True, invalidation_mode=mode)
    print(json.dumps({"ok": True, "python": "{}.{}.{}".format(*sys.version_info[:3])}))
    return 0


def main(argv: list[str]) -> int:
    name = os.environ.get("FAAS_HANDLER", "handler")
    if argv[1:] == ["--check"]:
        return check(name)
    if argv[1:] in (["--once"], ["--once", "--stream"]):
        return run_once(name, streams=argv[2:] == ["--stream"])
    if argv[1:2] == ["--compile"] and len(argv) == 3:  # when faasd adds the runtime
        return compile_wrapper(argv[2])
    try:
        _, function = load(name)
    except LoadError as exc:
        print(f"faas runtime: {exc}", file=sys.stderr)
        return 1
    import faas_handler

    # Connections, or (under --sandbox fork) the daemon's word that this process is the template:
    # the code is loaded once, above, and serve() forks a sandboxed child per connection.
    faas_handler.serve(make_handle(function), style="plain")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
