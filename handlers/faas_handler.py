"""faasd handler SDK: one file, standard library only, Python 3.8 or newer.

Copy this file into your image next to your code (for example to ``/app/faas_handler.py``) and
hand ``serve`` your application, in whichever of three styles it is written:

    from faas_handler import serve

    def handle(request):                        # plain: a Request in, a response value out
        return {"hello": request.query.get("name", "world")}

    serve(handle)          # or serve(flask_app): WSGI (PEP 3333), or serve(starlette_app): ASGI 3

A plain handler returns a ``str`` (text/plain), ``bytes``, a ``dict`` or ``list`` (JSON), a
``(status, body)`` or ``(status, body, headers)`` tuple, ``None`` (204) or a ``Response``, whose
body may also be an iterable that is sent piece by piece. ``sse(events)`` makes a Server-Sent
Events response (``text/event-stream``, one flush per event) for the plain style, and
``event_stream(events)`` the body for any WSGI framework.

faasd starts one container per TCP connection. The handler connects to ``/control.sock`` and
receives one message (handler protocol v1): a JSON object with the request's metadata, and the
client's connected TCP socket attached with SCM_RIGHTS. ``serve`` runs the app for every request
the client sends on that connection (HTTP/1.1 keep-alive). When the daemon reuses containers
(``faas new --reuse N``), its message says ``"more": true`` and ``serve`` comes back to
``/control.sock`` for the next connection. An ASGI app's lifespan startup runs before the first
connection is taken (a warm container has it done before a client arrives), and its shutdown
after the last. When the last client is done, ``serve`` ends the process (atexit callbacks run
and stdout and stderr are flushed, the interpreter's teardown is skipped), unless it runs off the
main thread, a non-daemon thread still runs, or ``exit_when_done=False``: then it returns.
A connection the gateway routed by path (``/function/NAME/...``) carries that route's
``prefix`` in its metadata: the app is mounted under it, as ``SCRIPT_NAME`` (ASGI
``root_path``) with the rest of the path as ``PATH_INFO``, so the URLs it builds stay under it.
``accept()`` gives you the raw socket and the metadata instead, to speak any protocol yourself.
The metadata is also in the WSGI environ and the ASGI scope as ``faas.metadata``, and in
``Request.metadata``. ``FAAS_CONTROL_SOCKET`` overrides the control socket's path, for tests.

Every connection pays for this module's import in a fresh container, so it imports only what a
WSGI or plain app needs: the ASGI bridge's modules (asyncio, threading, ...) are imported when an
ASGI app is served, inspect only for an app whose style its code object cannot tell, and the
HTTP/1.1 request parser is this file's own (http.server would bring email, html and socketserver).
Compile it into the image (``python -m compileall /app``): a read-only rootfs cannot cache its
bytecode, and compiling this file again in each container takes about as long as the import.
"""

from __future__ import annotations  # annotations stay strings: 3.8 never evaluates dict[...] or X | None

import array
import io
import json
import os
import re
import select
import socket
import sys
import time
import types
import wsgiref.handlers
import wsgiref.headers
import wsgiref.util
from collections.abc import Mapping

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing in every container
if TYPE_CHECKING:
    import asyncio
    import concurrent.futures
    import queue
    import threading
    import traceback
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

    WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
    Message = dict[str, Any]  # an ASGI event

CONTROL_SOCKET = "/control.sock"
MAX_MESSAGE_BYTES = 1024  # protocol v1: the metadata never exceeds this
MAX_CHUNKED_BODY = 16 * 1024 * 1024  # a chunked request body is read whole, into memory
MAX_DRAIN = 1024 * 1024  # body bytes the app left unread that are skipped to keep the connection
DEADLINE_MARGIN = 0.5  # seconds kept free before the daemon's deadline: the last response ends, the process exits
LINGER = 1.0  # the most seconds a closing connection waits for the client's end (see _linger)
MAX_LINE = 65536  # the request line, each header line, each chunk size line
MAX_HEADERS = 100  # header fields in one request
ASGI_READ = 65536  # the most body bytes one ASGI ``http.request`` message carries
SERVER_SOFTWARE = "faas_handler/1"
STYLES = ("wsgi", "asgi", "plain")


class HandoffError(Exception):
    """The daemon's control message could not be received or did not carry a client socket."""


class Retired(HandoffError):
    """The daemon hung up ``/control.sock`` without handing over a connection: it retires this
    container (a warm pool emptied, a function removed), which has nothing left to serve."""


class LifespanError(Exception):
    """The ASGI app answered ``lifespan.startup`` with ``lifespan.startup.failed``."""


def accept(path: str | None = None) -> tuple[socket.socket, dict[str, Any]]:
    """Connect to the control socket; return the client's TCP socket and the request metadata."""
    path = path or os.environ.get("FAAS_CONTROL_SOCKET", CONTROL_SOCKET)
    fds = array.array("i")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
        try:
            control.connect(path)
            # socket.recv_fds (3.9+) wraps this very call; recvmsg keeps a single path back to 3.8.
            message, ancillary, _flags, _address = control.recvmsg(MAX_MESSAGE_BYTES, socket.CMSG_SPACE(fds.itemsize))
        except ConnectionResetError as exc:  # the listening socket closed while we waited in its queue
            raise Retired(f"{path} was closed without a connection") from exc
        except OSError as exc:
            raise HandoffError(f"cannot receive from {path} (is this running under faasd?): {exc}") from exc
    if not message and not ancillary:  # the end of the stream, not a message
        raise Retired(f"{path} was closed without a connection")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not fds:
        raise HandoffError(f"the message on {path} carried no file descriptor ({len(message)} bytes of data)")
    for extra in fds[1:]:  # protocol v1 sends exactly one; never leak a surplus
        os.close(extra)
    client = socket.socket(fileno=fds[0])
    try:
        metadata = json.loads(message.decode("utf-8"))
        if not isinstance(metadata, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:  # also JSONDecodeError and UnicodeDecodeError
        client.close()
        raise HandoffError(f"the message on {path} is not protocol v1 metadata: {exc}") from exc
    # O_NONBLOCK belongs to the open file, which the daemon's asyncio loop shared with us.
    client.setblocking(True)
    return client, metadata


def serve(
    app: Callable[..., Any], path: str | None = None, style: str | None = None, *, exit_when_done: bool = True
) -> None:
    """Take connections from faasd and run ``app`` on each request until each client is done.

    ``style`` is ``"wsgi"``, ``"asgi"`` or ``"plain"``; left out, it is told from ``app`` itself
    (see ``app_style``). The style is settled and the app started before a connection is taken,
    so a wrong app leaves the client to the daemon's 502 instead of a half-served connection.

    When the last client is done (and an ASGI app's lifespan shutdown has run), serve() ends the
    process, unless ``exit_when_done`` is False. It returns all the same off the main thread, or
    while another non-daemon thread runs (see ``_exit_process``).
    """
    style = style or app_style(app)
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, not {style!r}")
    if style == "asgi":
        _serve_asgi(app, path)
    else:
        _serve_connections(_plain_as_wsgi(app) if style == "plain" else app, path)
    if exit_when_done:
        _exit_process()


def app_style(app: Callable[..., Any]) -> str:
    """``"asgi"`` for a coroutine function (or an object whose ``__call__`` is one), else
    ``"wsgi"`` for two required positional parameters and ``"plain"`` for one."""
    is_coroutine, required, variadic = _call_shape(app)
    if is_coroutine:
        return "asgi"
    if not variadic and required in (1, 2):
        return "plain" if required == 1 else "wsgi"
    raise TypeError(
        f"cannot tell the style of {app!r}: a plain handler takes (request), a WSGI app"
        " (environ, start_response), an ASGI app is async (scope, receive, send); pass style=..."
    )


_CO_VARARGS, _CO_COROUTINE = 0x04, 0x80  # inspect.CO_VARARGS, inspect.CO_COROUTINE
# Attributes inspect heeds over the code: functools.wraps, a set signature, inspect.markcoroutinefunction.
_INSPECT_HINTS = ("__wrapped__", "__signature__", "_is_coroutine_marker")


def _call_shape(app: Any) -> tuple[bool, int, bool]:
    """Whether ``app`` is a coroutine function, how many positional parameters a call must give
    it, and whether it takes ``*args``: what inspect would say, read from the code object of a
    function, method or instance with ``def __call__`` (inspect costs more to import than the
    rest of a WSGI request); anything else (a partial, a wrapper, a class) is left to inspect."""
    function, bound = _python_function(app)
    if function is None:
        return _call_shape_by_inspect(app)
    code = function.__code__
    required = max(code.co_argcount - bound - len(function.__defaults__ or ()), 0)
    return bool(code.co_flags & _CO_COROUTINE), required, bool(code.co_flags & _CO_VARARGS)


def _python_function(app: Any) -> tuple[types.FunctionType | None, int]:
    """The function that calling ``app`` runs, and how many parameters the call binds itself (a
    method's self); ``(None, 0)`` where the code alone does not tell what inspect would."""
    if isinstance(app, type):  # calling a class runs __new__, __init__, or a metaclass's __call__
        return None, 0
    if type(app) is types.FunctionType:
        function, bound = app, 0
    elif type(app) is types.MethodType and type(app.__func__) is types.FunctionType:
        function, bound = app.__func__, 1
    elif type(type(app).__call__) is types.FunctionType:
        function, bound = type(app).__call__, 1
    else:
        return None, 0
    if any(hasattr(thing, hint) for thing in (app, function) for hint in _INSPECT_HINTS):
        return None, 0
    return function, bound


def _call_shape_by_inspect(app: Any) -> tuple[bool, int, bool]:
    import inspect

    is_coroutine = inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(type(app).__call__)
    try:
        parameters = list(inspect.signature(app).parameters.values())
    except (TypeError, ValueError) as exc:  # not callable, or a builtin without a signature
        if is_coroutine:
            return True, 0, False
        raise TypeError(f"{app!r} is not an app serve() can run: {exc}") from exc
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in positional and p.default is inspect.Parameter.empty]
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    return is_coroutine, len(required), variadic


def _serve_connections(app: WSGIApp, path: str | None, forkable: bool = True) -> None:
    """Serve each connection the daemon hands over: one, or more while its message says so.

    A message that says ``"template": true`` makes this process a template instead (fork mode):
    it then forks a sandboxed child per connection, ``forkable`` apps only.
    """
    more = True
    while more:
        try:
            client, metadata = accept(path)
        except Retired:  # the daemon's decision, not a failure: nothing to log
            return
        if metadata.get("template") is True:
            _serve_as_template(client, app if forkable else None)
            return
        more = metadata.get("more") is True
        with client:
            _serve_client(client, metadata, app)


def _serve_client(client: socket.socket, metadata: dict[str, Any], app: WSGIApp) -> None:
    """Every request on one client's connection, then a lingering close."""
    connection = _Connection(client, metadata, app)
    try:
        connection.serve()
    except ConnectionError as exc:  # the client left mid-request: its business, not a failure
        _log(metadata, f"client gone: {exc}")
        return
    _linger(client, connection.deadline.bounded(LINGER))


def _exit_process() -> None:
    """End the process without the interpreter's teardown, which costs a few ms of CPU in every
    container: nothing in a container outlives its handler, and the container has no way out but
    stdout, stderr and the client's socket, closed by now. What a normal exit does that can still
    matter runs first: atexit callbacks (logging's flush), then stdout and stderr are flushed.
    Non-daemon threads would be waited for: while one runs, or off the main thread, this returns."""
    threads = sys.modules.get("threading")  # not imported: no thread was started through it
    if threads is not None:
        current = threads.current_thread()
        if current is not threads.main_thread() or any(
            thread is not current and not thread.daemon and thread.is_alive() for thread in threads.enumerate()
        ):
            return
    import atexit

    atexit._run_exitfuncs()  # what Py_Finalize calls; exceptions are printed and skipped, as there
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # None, a closed pipe, a closed file
            pass
    os._exit(0)


def _log(metadata: Mapping[str, Any], event: str) -> None:
    sys.stderr.write(f"faas_handler id={metadata.get('id', '-')} {event}\n")


def _linger(client: socket.socket, seconds: float) -> None:
    """Half-close, then discard what the client still sends, for a moment (RFC 9112 9.6).

    Closing with unread input (say, the rest of a refused upload) makes the kernel answer with a
    reset, which can destroy the last response before the client reads it.
    """
    end = time.monotonic() + seconds
    try:
        client.shutdown(socket.SHUT_WR)
        client.settimeout(seconds)
        while time.monotonic() < end and client.recv(65536):
            pass
    except OSError:  # a timeout or a reset: either way the client has had its chance
        pass


class _Record:
    """A frozen record whose fields are its class's ``__slots__``: what ``@dataclass(frozen=True)``
    makes, without importing dataclasses (and with it inspect) in every container."""

    __slots__ = ()

    def __init__(self, *values: Any) -> None:
        if len(values) != len(self.__slots__):
            raise TypeError(f"{type(self).__name__} takes {len(self.__slots__)} values, not {len(values)}")
        for name, value in zip(self.__slots__, values):  # noqa: B905 - strict= is 3.10+; the lengths match
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name!r}")

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Record) and type(other) is type(self):
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)


# -- fork mode: a template that forks a fresh sandbox per connection ------------------------------
#
# Under ``faas new --sandbox fork`` this process loads the app once and becomes a template: the
# daemon's message says ``"template": true`` and carries, instead of a client, a channel (an
# AF_UNIX SOCK_SEQPACKET socket). Its first message says how a child is built (the size of its
# /tmp, a seccomp filter in BPF); each later one is a connection's metadata with four fds: the
# client, the child's own line to the daemon, and the child's stdout and stderr. The template
# never reads a client byte: it forks, and the child builds its sandbox in bubblewrap's order
# (user namespace and its id maps with the other namespaces, a second fork to be pid 1, mounts,
# lo, fds, capabilities, no_new_privs, seccomp) before the app sees the request.

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
# The one set of namespaces the template's filter lets unshare() ask for (faasd/sandbox/seccomp.py).
FORK_NAMESPACES = _CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWIPC | _CLONE_NEWUTS | _CLONE_NEWNET | _CLONE_NEWPID
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT, _MS_BIND, _MS_MOVE = 1, 2, 4, 8, 0x20, 0x1000, 0x2000
_MOUNT_OPTION_FLAGS = {"nosuid": _MS_NOSUID, "nodev": _MS_NODEV, "noexec": _MS_NOEXEC}
_PR_SET_SECCOMP, _PR_CAPBSET_DROP, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT = 22, 24, 36, 38, 47
_PR_CAP_AMBIENT_CLEAR_ALL, _SECCOMP_MODE_FILTER, _CAPABILITY_VERSION_3 = 4, 2, 0x20080522
_SIOCSIFFLAGS, _IFF_UP_LOOPBACK_RUNNING = 0x8914, 0x1 | 0x8 | 0x40
_FORK_FDS = 3  # the child's line to the daemon, its stdout, its stderr
_EINVAL = 22


def _serve_as_template(channel: socket.socket, app: WSGIApp | None) -> None:
    """Fork a sandboxed child for each connection the daemon sends, until it closes the channel;
    then wait for the children still serving. ``app`` None: this app cannot be a template."""
    import ctypes
    import signal

    with channel:
        setup, _ = _receive(channel, 1 << 16, 0)
        header, _, bpf = setup.partition(b"\n")
        if app is None:
            channel.send(b'{"template": "refused", "reason": "an ASGI app cannot be a template"}')
            return
        sizes = json.loads(header)
        scratch = (int(sizes["tmp_bytes"]), int(sizes["shm_bytes"]))
        libc = ctypes.CDLL(None, use_errno=True)
        if os.getpid() == 1:
            _stay_pid_1_below(channel)
        # Orphaned grandchildren (each connection's pid 1) come back here to be reaped.
        _check(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: _reap_children())
        channel.send(b'{"template": "ready"}')
        while True:
            message, fds = _receive(channel, MAX_MESSAGE_BYTES, _FORK_FDS)
            if not message:
                break  # the daemon is done with this template
            if len(fds) == _FORK_FDS:
                _fork_child(libc, channel, (scratch, bpf), json.loads(message), fds, app)
            for fd in fds:
                os.close(fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def _stay_pid_1_below(channel: socket.socket) -> None:
    """Fork: this process stays pid 1 of the container and only reaps; the child returns, to be
    the template.

    Pid 1's death ends its pid namespace and kills every process in it: a template that were pid 1
    would take every child serving a connection with it when it dies (the app crashes, or is
    killed). Pid 1 holds nothing else: it closes the channel (the daemon sees the template's end
    by its pidfd), reaps the children orphaned to it, and exits with the template's status once no
    process is left, which ends the container.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or both would write the pending output
    template = os.fork()
    if template == 0:
        return
    channel.close()
    status = 0
    while True:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            os._exit(status)
        if pid == template:  # waitstatus_to_exitcode is 3.9+
            status = os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else 128 + os.WTERMSIG(wait_status)


def _receive(sock: socket.socket, size: int, most_fds: int) -> tuple[bytes, list[int]]:
    """One message and the fds it carried (at most ``most_fds``; a surplus is closed)."""
    fds = array.array("i")
    message, ancillary, _flags, _address = sock.recvmsg(size, socket.CMSG_SPACE(max(most_fds, 1) * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    for extra in fds[most_fds:]:
        os.close(extra)
    return message, list(fds[:most_fds])


def _reap_children() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _fork_child(
    libc: Any,
    channel: socket.socket,
    setup: tuple[tuple[int, int], bytes],
    metadata: dict[str, Any],
    fds: list[int],
    app: WSGIApp,
) -> None:
    """Fork a child for one connection to come; the template goes back to its channel.

    The child builds its sandbox, then waits on its line for the connection (its metadata and the
    client's fd): no code of the app runs for it before, and it serves no other.
    """
    scratch, bpf = setup
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would write the template's pending output again
    if os.fork() != 0:
        return
    status = 1
    try:
        import signal

        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        channel.close()
        line_fd, stdout_fd, stderr_fd = fds
        os.dup2(stdout_fd, 1)
        os.dup2(stderr_fd, 2)
        _enter_namespaces(libc)
        if os.fork() != 0:
            os._exit(0)  # the grandchild is pid 1 of the new pid namespace; the template reaps it
        line = socket.socket(fileno=line_fd)
        line.send(b"started")  # the daemon learns this process's host pid from SO_PASSCRED
        _make_private_mounts(libc, *scratch)
        _loopback_up()
        if line.recv(8) != b"go":  # the daemon has put this process in its connection's cgroups
            os._exit(1)
        os.closerange(3, line_fd)
        os.closerange(line_fd + 1, os.sysconf("SC_OPEN_MAX"))
        _drop_privileges(libc, bpf)
        message, client_fds = _receive(line, MAX_MESSAGE_BYTES, 1)
        line.close()
        if not client_fds:  # the daemon no longer needs this child
            status = 0
            return
        metadata = json.loads(message)
        client = socket.socket(fileno=client_fds[0])
        client.setblocking(True)
        with client:
            _serve_client(client, metadata, app)
        status = 0
    except BaseException as exc:  # never back into the template's loop
        _log(metadata, f"sandbox failed: {exc!r}")
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)


def _check(result: int, call: str) -> None:
    if result != 0:
        import ctypes

        number = ctypes.get_errno()
        raise OSError(number, f"{call}: {os.strerror(number)}")


def _enter_namespaces(libc: Any) -> None:
    """New user, mount, pid, ipc, uts and net namespaces; the user's ids map to themselves.

    An unprivileged process may map only its own ids, its gid only once setgroups is denied, and
    not uid 0 unless it held CAP_SETFCAP (Linux 5.12, verify_root_map): a template never runs as
    root (the daemon starts it as another user when the image asks for root).
    """
    uid, gid = os.geteuid(), os.getegid()
    _check(libc.unshare(FORK_NAMESPACES), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        try:
            with open(f"/proc/self/{name}", "w") as file:
                file.write(text)
        except OSError as exc:
            raise OSError(exc.errno, f"writing {text!r} to {name}: {exc.strerror}") from None


def _make_private_mounts(libc: Any, tmp_bytes: int, shm_bytes: int) -> None:
    """A /tmp and /dev/shm of its own (read-only for a size of 0, as a container's), /dev
    read-only, and /proc holding this process alone.

    A new procfs is refused here (the container's /proc has masked paths over it, which the
    kernel counts as hiding something): /proc is a small tmpfs whose ``self`` is this process's
    own directory of the container's procfs, bound in before that procfs is covered.
    """
    own = "/proc/" + os.readlink("/proc/self")
    dev_flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _mount_flags("/dev")
    # tmpfs reads size=0 as unlimited: a size of 0 is a small tmpfs, read-only once /proc is made.
    _mount(libc, "tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={tmp_bytes or 4096},mode=1777")
    shm_flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC | (0 if shm_bytes else _MS_RDONLY)
    _mount(libc, "shm", "/dev/shm", "tmpfs", shm_flags, f"size={shm_bytes or 4096},mode=1777")
    staging = "/tmp/.proc"
    os.mkdir(staging)
    _mount(libc, "proc", staging, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "size=4k,mode=555")
    os.mkdir(staging + "/self")
    _mount(libc, own, staging + "/self", None, _MS_BIND)
    _mount(libc, staging, "/proc", None, _MS_MOVE)
    os.rmdir(staging)
    if not tmp_bytes:
        _mount(libc, None, "/tmp", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    _mount(libc, None, "/dev", None, dev_flags)  # the container's /dev is shared with the other children


def _mount(libc: Any, source: str | None, target: str, kind: str | None, flags: int, data: str | None = None) -> None:
    encoded = [None if value is None else value.encode() for value in (source, target, kind, data)]
    _check(libc.mount(encoded[0], encoded[1], encoded[2], flags, encoded[3]), f"mount {target}")


def _mount_flags(target: str) -> int:
    """The nosuid, nodev and noexec flags of the mount at ``target``: a remount must keep them."""
    flags = 0
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if fields[4] == target:  # the last one listed is the one on top
                flags = sum(_MOUNT_OPTION_FLAGS.get(option, 0) for option in fields[5].split(","))
    return flags


def _loopback_up() -> None:
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", _IFF_UP_LOOPBACK_RUNNING))


def _drop_privileges(libc: Any, bpf: bytes) -> None:
    """Every capability of the new user namespace dropped, then no_new_privs and the filter."""
    import ctypes

    cap = 0
    while libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    if ctypes.get_errno() != _EINVAL:  # past the kernel's last capability
        _check(-1, "prctl(PR_CAPBSET_DROP)")
    _check(libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT)")
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    _check(libc.capset(header, (ctypes.c_uint32 * 6)()), "capset")
    _install_filter(libc, bpf)


def _install_filter(libc: Any, bpf: bytes) -> None:
    """no_new_privs, then the seccomp filter ``bpf`` (an array of ``struct sock_filter``)."""
    import ctypes

    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")

    class SockFprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_char_p))

    program = SockFprog(len(bpf) // 8, bpf)
    _check(libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0), "seccomp")


# -- plain style ----------------------------------------------------------------------------------


class Request(_Record):
    """One HTTP request, read whole, for a plain ``handle(request)``."""

    __slots__ = ("method", "path", "query", "headers", "body", "query_string", "metadata")
    method: str
    path: str
    query: dict[str, str]  # the first value of each name; query_string has them all
    headers: wsgiref.headers.Headers  # case-insensitive: headers.get("content-type")
    body: bytes
    query_string: str
    metadata: dict[str, Any]  # the daemon's message: id, deadline, peer...

    def __init__(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: wsgiref.headers.Headers,
        body: bytes,
        query_string: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(method, path, query, headers, body, query_string, {} if metadata is None else metadata)

    @classmethod
    def from_environ(cls, environ: Mapping[str, Any]) -> Request:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        query: dict[str, str] = {}
        for name, value in _query_pairs(environ.get("QUERY_STRING", "")):
            query.setdefault(name, value)
        return cls(
            method=environ["REQUEST_METHOD"],
            # PEP 3333 hands the path over as latin-1; URLs are UTF-8 (RFC 3986).
            path=(environ.get("PATH_INFO") or "/").encode("latin-1").decode("utf-8", "replace"),
            query=query,
            headers=wsgiref.headers.Headers(_environ_headers(environ)),
            body=environ["wsgi.input"].read(length) if length else b"",
            query_string=environ.get("QUERY_STRING", ""),
            metadata=environ.get("faas.metadata", {}),
        )

    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


class Response(_Record):
    """A status, headers and a body; calling it as a WSGI app sends it, so WSGI code may use it too.

    ``body`` is ``str`` (text/plain; charset=utf-8), ``bytes`` (application/octet-stream), a
    ``dict`` or ``list`` (JSON), or an iterable of ``str``/``bytes``: sent with chunked encoding,
    each piece flushed as it comes. ``content_type`` overrides the type the body implies.
    """

    __slots__ = ("body", "status", "headers", "content_type")
    body: Any
    status: int
    headers: Any  # a mapping or (name, value) pairs; pairs may repeat a name (Set-Cookie)
    content_type: str | None

    def __init__(self, body: Any = b"", status: int = 200, headers: Any = (), content_type: str | None = None) -> None:
        super().__init__(body, status, headers, content_type)

    def __call__(self, environ: Mapping[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        parts, implied_type = _encode_body(self.body)
        headers = _header_pairs(self.headers)
        content_type = self.content_type or implied_type
        if content_type and not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", content_type))
        start_response(_status_line(self.status), headers)
        return parts


def as_response(result: Any) -> Response:
    """What a plain handler returned, as a Response; a TypeError says what may be returned."""
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(status=204)
    if isinstance(result, tuple) and len(result) in (2, 3) and isinstance(result[0], int):
        response = as_response(result[1])
        extra = _header_pairs(result[2]) if len(result) == 3 else []
        return Response(response.body, result[0], _header_pairs(response.headers) + extra, response.content_type)
    if isinstance(result, (str, bytes, bytearray, dict, list)):
        return Response(result)
    raise TypeError(
        f"a plain handler returned {type(result).__name__}; return str, bytes, dict, list, None,"
        " a (status, body[, headers]) tuple or a Response"
    )


def _plain_as_wsgi(handle: Callable[[Request], Any]) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return as_response(handle(Request.from_environ(environ)))(environ, start_response)

    return app


def _encode_body(body: Any) -> tuple[Iterable[bytes], str | None]:
    """The WSGI iterable for a Response body, and the Content-Type it implies."""
    if isinstance(body, (str, bytes, bytearray)) and not body:
        return [], None  # nothing to describe (a 204, a redirect)
    if isinstance(body, str):
        return [body.encode("utf-8")], "text/plain; charset=utf-8"
    if isinstance(body, (bytes, bytearray)):
        return [bytes(body)], "application/octet-stream"
    if isinstance(body, (dict, list)):
        return [json.dumps(body).encode("utf-8")], "application/json"
    return _mapped(body, lambda part: part.encode("utf-8") if isinstance(part, str) else bytes(part)), None


def _mapped(source: Iterable[Any], convert: Callable[[Any], bytes]) -> Iterator[bytes]:
    """``convert`` each item of ``source``; closing this closes ``source`` (a client gone mid-stream
    reaches the app's generator as GeneratorExit, so its ``finally`` runs)."""
    try:
        for item in source:
            yield convert(item)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def _header_pairs(headers: Any) -> list[tuple[str, str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(name), str(value)) for name, value in items]


def _status_line(status: int) -> str:
    from http import HTTPStatus  # only a plain or ASGI response needs a reason phrase looked up

    try:
        return f"{int(status)} {HTTPStatus(status).phrase}"
    except ValueError:  # a code http.HTTPStatus does not name still makes a valid status line
        return f"{int(status)} "


def _environ_headers(environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The request's headers back from a WSGI environ, names in Title-Case."""
    headers = [
        (name.title(), environ[key])
        for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length"))
        if environ.get(key)
    ]
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").title(), value))
    return headers


_PERCENT_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


def _mounted(path: str, metadata: Mapping[str, Any]) -> tuple[str, str]:
    """``SCRIPT_NAME`` and ``PATH_INFO`` of a decoded (latin-1) path: the ``prefix`` the gateway
    routed the connection by (``/function/NAME``, in the metadata) and the rest. A later request
    on the connection whose path is not under the prefix is not mounted at all."""
    prefix = metadata.get("prefix")
    if isinstance(prefix, str) and prefix:
        prefix = prefix.encode("utf-8").decode("latin-1")
        if path == prefix or path.startswith(prefix + "/"):
            return prefix, path[len(prefix) :]
    return "", path


def _unquote(text: str, encoding: str) -> str:
    """``urllib.parse.unquote(text, encoding)``: each run of %XX escapes decoded as one byte
    string, anything else left as it is (urllib.parse alone takes ~2 ms to import)."""
    if "%" not in text:
        return text
    return _PERCENT_RUN.sub(lambda run: bytes.fromhex(run.group().replace("%", "")).decode(encoding, "replace"), text)


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """``urllib.parse.parse_qsl(query, keep_blank_values=True)``: ``&``-separated, ``+`` for space."""
    pairs = []
    for field in query.split("&"):
        if field:
            name, _, value = field.partition("=")
            pairs.append((_unquote(name.replace("+", " "), "utf-8"), _unquote(value.replace("+", " "), "utf-8")))
    return pairs


# -- Server-Sent Events ---------------------------------------------------------------------------


class Event(_Record):
    """One Server-Sent Event (WHATWG HTML, "Server-sent events"); ``data`` that is not a str is
    sent as JSON, ``retry`` is the reconnection delay the client should use, in milliseconds."""

    __slots__ = ("data", "event", "id", "retry")
    data: Any
    event: str | None
    id: str | None
    retry: int | None

    def __init__(self, data: Any = "", event: str | None = None, id: str | None = None, retry: int | None = None):
        super().__init__(data, event, id, retry)

    def encode(self) -> bytes:
        lines = []
        for name, value in (("event", self.event), ("id", self.id)):
            if value is not None:
                if re.search(r"[\r\n\0]", value):  # a line break would end the field; NUL voids an id
                    raise ValueError(f"an SSE {name} must be one line without NUL: {value!r}")
                lines.append(f"{name}: {value}")
        if self.retry is not None:
            lines.append(f"retry: {int(self.retry)}")
        text = self.data if isinstance(self.data, str) else json.dumps(self.data)
        lines.extend("data: " + line for line in re.split(r"\r\n|\r|\n", text))
        return ("\n".join(lines) + "\n\n").encode("utf-8")


def event_stream(events: Iterable[Any]) -> Iterator[bytes]:
    """A ``text/event-stream`` body: one encoded event per item (an Event, or data for one).

    Each item is one piece of the WSGI body, and serve() flushes every piece as it comes. For any
    WSGI framework: ``flask.Response(event_stream(gen()), mimetype="text/event-stream")``.
    """
    return _mapped(events, lambda item: (item if isinstance(item, Event) else Event(item)).encode())


def sse(events: Iterable[Any], headers: Any = ()) -> Response:
    """A Server-Sent Events response, for a plain handler (return it) or WSGI code (call it)."""
    pairs = [("Cache-Control", "no-store"), *_header_pairs(headers)]
    return Response(event_stream(events), headers=pairs, content_type="text/event-stream")


# -- ASGI -----------------------------------------------------------------------------------------


def _import_asgi_modules() -> None:
    """Bind the modules only the ASGI bridge uses, on first use: asyncio alone takes longer to
    import than the whole WSGI path, and every container would pay for it."""
    global asyncio, concurrent, queue, threading, traceback
    import asyncio
    import concurrent.futures
    import queue
    import threading
    import traceback


def _serve_asgi(app: Callable[..., Any], path: str | None) -> None:
    """Run an ASGI 3 app behind the WSGI connection loop: the app's coroutines run on an event
    loop in a second thread, while the connection's thread keeps the socket. Lifespan startup
    runs first and shutdown last, after the requests' remaining work (background tasks)."""
    _import_asgi_modules()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="faas-asgi", daemon=True)
    thread.start()
    try:
        bridge = _AsgiBridge(app, loop)
        bridge.wait(bridge.lifespan.startup())
        try:
            _serve_connections(bridge, path, forkable=False)  # a thread runs the loop: no fork
        finally:
            concurrent.futures.wait(bridge.requests)
            bridge.wait(bridge.lifespan.shutdown())
            if hasattr(loop, "shutdown_default_executor"):  # 3.9+, whose executor threads are not daemons
                bridge.wait(loop.shutdown_default_executor())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


class _AsgiBridge:
    """A WSGI app that runs each request through the ASGI app on ``loop``."""

    def __init__(self, app: Callable[..., Any], loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop
        self.state: dict[str, Any] = {}  # lifespan state; each request gets a shallow copy (ASGI spec)
        self.lifespan = _Lifespan(app, self.state)
        self.requests: list[concurrent.futures.Future[None]] = []  # one per request of this one connection

    def wait(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        exchange = _Exchange(self.loop, environ["wsgi.input"], int(environ.get("CONTENT_LENGTH") or 0))
        scope = _http_scope(environ, dict(self.state))
        self.requests.append(asyncio.run_coroutine_threadsafe(exchange.run(self.app, scope), self.loop))
        return exchange.respond(start_response)


class _Exchange:
    """One request between the app's coroutine (on the loop) and the connection's thread.

    ``send`` returns once the connection's thread has written the message, as a server's send
    returns once its transport took the data: a fast producer cannot run ahead of the client, and
    a client gone shows in ``send`` as OSError (ASGI HTTP spec 2.4). The response ends at its last
    body message; the app may go on (background tasks) while the next request is read.
    """

    _END = object()

    def __init__(self, loop: asyncio.AbstractEventLoop, body: Any, length: int) -> None:
        self.loop = loop
        self.body = body
        self.left = length  # body bytes not yet handed to the app
        self.body_sent = False  # the last http.request message was given
        # From the loop: (message, ack), then (_END, the app's exception or None) when it returns.
        self.outbox: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.over: asyncio.Event | None = None  # made on the loop (3.8 binds it there)
        self.pending: asyncio.Future[None] | None = None  # the ack the app's send awaits
        self.final_sent = False  # the app sent its last body message
        # After the response the connection's thread reads on (what is left of the body, the next
        # request): a body read the app still has under way must end first, and none may start.
        self.reading = threading.Lock()
        self.responded = False

    # On the loop's thread.

    async def run(self, app: Callable[..., Any], scope: Message) -> None:
        self.over = asyncio.Event()
        try:
            await app(scope, self.receive, self.send)
        except BaseException as exc:  # a cancellation too: the connection's thread must not wait forever
            self.outbox.put((self._END, exc))  # before the response's end: a 500, or a cut connection
            if not isinstance(exc, Exception):
                raise
            if self.final_sent:
                traceback.print_exc()  # after the response: only the log can tell
        else:
            self.outbox.put((self._END, None))

    async def receive(self) -> Message:
        if not self.body_sent:
            data = b""
            if self.left > 0:
                data = await self.loop.run_in_executor(None, self._read, min(self.left, ASGI_READ))
                if not data:  # the client closed before the whole body arrived, or the response ended
                    self.left = 0
                    self.body_sent = True
                    return {"type": "http.disconnect"}
                self.left -= len(data)
            self.body_sent = self.left <= 0
            return {"type": "http.request", "body": data, "more_body": not self.body_sent}
        assert self.over is not None
        await self.over.wait()  # the response is done, or the client is gone
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        assert self.over is not None
        if self.over.is_set():
            raise OSError("the client connection is closed or the response has ended")
        self.pending = self.loop.create_future()
        self.outbox.put((message, self.pending))
        await self.pending
        if message.get("type") == "http.response.body" and not message.get("more_body", False):
            self.final_sent = True

    def _read(self, size: int) -> bytes:  # on an executor thread: the read blocks
        with self.reading:
            return b"" if self.responded else self.body.read(size)

    def _settle(self, ack: asyncio.Future[None], error: BaseException | None) -> None:
        if not ack.done():  # a cancelled send() cancelled its ack
            ack.set_result(None) if error is None else ack.set_exception(error)

    def _close(self, last: asyncio.Future[None] | None) -> None:
        """The response is over: ``last`` is its last message's ack, or None if the client left."""
        assert self.over is not None
        self.over.set()
        if last is not None:
            self._settle(last, None)
        if self.pending is not None:  # the ack of a message that was never written
            self._settle(self.pending, OSError("the client connection is closed"))

    # On the connection's thread.

    def respond(self, start_response: Callable[..., Any]) -> Iterator[bytes]:
        """The WSGI body: the app's messages, written in order, each acknowledged once written."""
        started, last = False, None
        try:
            while True:
                entry = self.outbox.get()
                if entry[0] is self._END:
                    failure = entry[1]
                    if failure is not None:
                        raise failure
                    raise RuntimeError(
                        "the ASGI app returned before its response ended"
                        if started
                        else "the ASGI app returned without sending a response"
                    )
                message, ack = entry
                kind, error = message.get("type"), None
                if kind == "http.response.start" and not started:
                    started = True
                    start_response(_status_line(message["status"]), _asgi_response_headers(message))
                elif kind == "http.response.body" and started:
                    body = bytes(message.get("body", b""))
                    if body:
                        yield body
                    if not message.get("more_body", False):
                        last = ack  # acknowledged once the connection no longer lends the app its body
                        return
                else:
                    error = RuntimeError(f"unexpected ASGI message {kind!r} {'after' if started else 'before'} start")
                self.loop.call_soon_threadsafe(self._settle, ack, error)
        finally:  # also when a write failed: the client is gone
            with self.reading:
                self.responded = True
            self.loop.call_soon_threadsafe(self._close, last)


class _Lifespan:
    """The ASGI lifespan protocol. An app that raises (or returns) before it answers startup has
    declined it: requests are served all the same, as the spec says."""

    def __init__(self, app: Callable[..., Any], state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.supported = False

    async def startup(self) -> None:
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.replies: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._run())
        reply = await self._ask("startup")
        if isinstance(reply, dict) and reply.get("type") == "lifespan.startup.complete":
            self.supported = True
        elif isinstance(reply, dict) and reply.get("type") == "lifespan.startup.failed":
            raise LifespanError(f"the ASGI app's startup failed: {reply.get('message', '')}")
        else:
            sys.stderr.write(f"faas_handler ASGI lifespan declined: {reply!r}\n")

    async def shutdown(self) -> None:
        if not self.supported:
            return
        reply = await self._ask("shutdown")
        if not (isinstance(reply, dict) and reply.get("type") == "lifespan.shutdown.complete"):
            sys.stderr.write(f"faas_handler ASGI shutdown: {reply!r}\n")
        await asyncio.wait([self.task])

    async def _ask(self, phase: str) -> Any:
        await self.inbox.put({"type": f"lifespan.{phase}"})
        return await self.replies.get()

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self.inbox.get, self.replies.put)
        except Exception as exc:
            await self.replies.put(exc)
        else:
            await self.replies.put("the app returned")


def _http_scope(environ: Mapping[str, Any], state: dict[str, Any]) -> Message:
    """The ASGI HTTP connection scope for one request, from the WSGI environ serve() makes."""
    raw_path = _split_target(environ.get("REQUEST_URI", environ.get("PATH_INFO", "/")))[1]
    headers = _environ_headers(environ)
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},  # 2.4: send raises OSError once the client is gone
        "http_version": environ["SERVER_PROTOCOL"].partition("/")[2] or "1.0",
        "method": environ["REQUEST_METHOD"],
        "scheme": environ.get("wsgi.url_scheme", "http"),
        "path": _unquote(raw_path, "utf-8"),  # ASGI: percent-decoded, then UTF-8
        "raw_path": raw_path.encode("latin-1"),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        # Mounted under the prefix (ASGI: root_path is SCRIPT_NAME, and path still includes it).
        "root_path": environ.get("SCRIPT_NAME", "").encode("latin-1").decode("utf-8", "replace"),
        "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers],
        "client": (environ["REMOTE_ADDR"], int(environ["REMOTE_PORT"])),
        "server": (environ["SERVER_NAME"], int(environ["SERVER_PORT"])),
        "state": state,
        "faas.metadata": environ.get("faas.metadata", {}),
    }


def _asgi_response_headers(message: Message) -> list[tuple[str, str]]:
    """ASGI's byte pairs as WSGI's str pairs; hop-by-hop headers are the server's to set (PEP 3333)."""
    headers = []
    for name, value in message.get("headers", ()):
        pair = (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
        if not wsgiref.util.is_hop_by_hop(pair[0]):
            headers.append(pair)
    return headers


# -- HTTP/1.1 on the handed socket ----------------------------------------------------------------

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # RFC 9110 5.6.2
# RFC 9112 3: method SP request-target SP HTTP-version; the target is any run of visible characters.
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([^\x00-\x20\x7f]+) HTTP/([0-9])\.([0-9])")
# RFC 9112 5.1: no whitespace before the colon; RFC 9110 5.5: no CR, LF, NUL or other controls in a value.
_FIELD_LINE = re.compile(rf"({_TOKEN}):[ \t]*([\t\x20-\x7e\x80-\xff]*)")


class _Refused(Exception):
    """A request the server must refuse before the app sees it; the connection's framing is lost."""

    def __init__(self, status: str, explain: str) -> None:
        super().__init__(explain)
        self.status = status  # a status line's code and reason: "400 Bad Request"
        self.explain = explain


class _Head(_Record):
    """A request's line and header fields, as read; ``version`` is ``HTTP/1.0`` or ``HTTP/1.1``."""

    __slots__ = ("method", "target", "version", "fields", "by_name")
    method: str
    target: str
    version: str
    fields: list[tuple[str, str]]  # (name, value) as sent, in order
    by_name: dict[str, list[str]]  # the values of each lower-cased name, in order: each request asks it often

    def __init__(self, method: str, target: str, version: str, fields: list[tuple[str, str]]) -> None:
        by_name: dict[str, list[str]] = {}
        for name, value in fields:
            by_name.setdefault(name.lower(), []).append(value)
        super().__init__(method, target, version, fields, by_name)

    def values(self, name: str) -> list[str]:
        """Each value of the field ``name`` (matched without regard to case), in order."""
        return self.by_name.get(name.lower(), [])

    def tokens(self, name: str) -> list[str]:
        """A comma-separated field's items, lower-cased: ``Connection: Keep-Alive, Upgrade``."""
        return [item.strip().lower() for value in self.values(name) for item in value.split(",")]


def _read_head(rfile: Any) -> _Head | None:
    """The next request's line and header fields (RFC 9112 sections 2 to 5), or None when the
    client closed the connection before a request began. Malformed input raises _Refused."""
    line = rfile.readline(MAX_LINE + 1)
    while line in (b"\r\n", b"\n"):  # RFC 9112 2.2: empty lines before a request line are ignored
        line = rfile.readline(MAX_LINE + 1)
    if not line:
        return None
    if len(line) > MAX_LINE:
        raise _Refused("414 URI Too Long", f"Request line over {MAX_LINE} bytes")
    request_line = _line_text(line)
    match = _REQUEST_LINE.fullmatch(request_line)
    if match is None:
        raise _Refused("400 Bad Request", f"Bad request line {request_line[:80]!r}")
    method, target, major, minor = match.groups()
    if major != "1":
        raise _Refused("505 HTTP Version Not Supported", f"HTTP/{major}.{minor} is not served here, HTTP/1.1 is")
    # HTTP/1.2 and on would be read as 1.1 (RFC 9110 2.5); 1.0 gets one response, then the close.
    head = _Head(method, target, "HTTP/1.0" if minor == "0" else "HTTP/1.1", _read_fields(rfile, "header"))
    hosts = len(head.values("Host"))
    if hosts > 1 or (hosts == 0 and head.version == "HTTP/1.1"):  # RFC 9112 3.2: a MUST, either way
        raise _Refused("400 Bad Request", f"{hosts} Host fields: an HTTP/1.1 request has one, any request at most one")
    return head


# RFC 9112 3.2.2: the absolute-form, as clients send it to a proxy: scheme "://" authority path ["?" query].
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://([^/?]*)([^?]*)(?:\?(.*))?")


def _split_target(target: str) -> tuple[str | None, str, str]:
    """A request target's authority (of the absolute-form only), path and query, still percent-encoded."""
    absolute = _ABSOLUTE_FORM.fullmatch(target)
    if absolute is None:
        path, _, query = target.partition("?")
        return None, path, query
    return absolute[1], absolute[2] or "/", absolute[3] or ""


def _read_fields(rfile: Any, kind: str) -> list[tuple[str, str]]:
    """Field lines up to the empty line that ends them (RFC 9112 5): a head's header fields, or
    the trailer fields after a chunked body; ``kind`` ("header", "trailer") names them when refused."""
    fields: list[tuple[str, str]] = []
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if line in (b"\r\n", b"\n"):
            return fields
        if len(line) > MAX_LINE:
            raise _Refused("431 Request Header Fields Too Large", f"{kind.title()} line over {MAX_LINE} bytes")
        if len(fields) == MAX_HEADERS:
            raise _Refused("431 Request Header Fields Too Large", f"More than {MAX_HEADERS} {kind} fields")
        text = _line_text(line)
        if text[:1] in (" ", "\t"):
            raise _Refused("400 Bad Request", f"Folded {kind} line {text[:80]!r} (obsolete, RFC 9112 5.2)")
        match = _FIELD_LINE.fullmatch(text)
        if match is None:
            raise _Refused("400 Bad Request", f"Bad {kind} line {text[:80]!r}")
        fields.append((match[1], match[2].rstrip(" \t")))


def _body_length(head: _Head) -> int | None:
    """The request body's length, or None for a chunked body (RFC 9112 6.3); what cannot be framed is refused."""
    codings = head.values("Transfer-Encoding")
    if codings:
        if ",".join(codings).strip().lower() != "chunked":
            raise _Refused("501 Not Implemented", f"Transfer-Encoding {codings!r} is not supported")
        return None
    # RFC 9110 8.6: a list of one length repeated ("3, 3", or two fields) is that length.
    lengths = {item.strip() for value in head.values("Content-Length") for item in value.split(",")}
    if len(lengths) > 1 or not all(re.fullmatch(r"[0-9]{1,18}", value) for value in lengths):
        raise _Refused("400 Bad Request", f"Bad Content-Length {head.values('Content-Length')!r}")
    return int(lengths.pop()) if lengths else 0


def _keep_alive(head: _Head) -> bool:
    """Whether the connection may carry another request after this one, as far as the request goes."""
    if head.values("Transfer-Encoding") and head.values("Content-Length"):
        return False  # RFC 9112 6.3: such a message may be smuggling another; close after it
    # An HTTP/1.0 client needs "Connection: keep-alive" both ways; one request is simpler.
    return head.version == "HTTP/1.1" and "close" not in head.tokens("Connection")


def _line_text(line: bytes) -> str:
    """A line without its LF or CRLF, bytes as latin-1 (RFC 9112 2.2); a line cut short is refused."""
    if not line.endswith(b"\n"):
        raise _Refused("400 Bad Request", f"Request cut short at {line[:80]!r}")
    return line[: -2 if line.endswith(b"\r\n") else -1].decode("latin-1")


class _Deadline:
    """When the daemon kills the container, and what still fits before then.

    The handoff metadata says when (``deadline``, Unix ms); the kill comes then, whatever the
    container is doing. A request is taken only while one as slow as the slowest so far on this
    connection can still end DEADLINE_MARGIN before it, so none is cut off mid-way.
    """

    def __init__(self, at: float | None) -> None:
        self.at = at  # on time.monotonic()'s clock; None when the daemon gave no deadline
        self.slowest = 0.0  # seconds, from a request's first byte to its response's end

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> _Deadline:
        unix_ms = metadata.get("deadline")
        if isinstance(unix_ms, bool) or not isinstance(unix_ms, (int, float)):
            return cls(None)
        return cls(time.monotonic() + unix_ms / 1000 - time.time())

    def room_for_another(self, started: float) -> bool:
        """Whether, after the request that began at ``started`` (monotonic), another as slow as
        the slowest so far, or as this one, could still be served in time."""
        if self.at is None:
            return True
        now = time.monotonic()
        return now + max(self.slowest, now - started) + DEADLINE_MARGIN <= self.at

    def request_cutoff(self) -> float | None:
        """Until when (monotonic) the next request may be waited for; None: for ever."""
        if self.at is None:
            return None
        return self.at - DEADLINE_MARGIN - self.slowest

    def bounded(self, seconds: float) -> float:
        """``seconds``, or what is left before the deadline less half the margin: for the close."""
        if self.at is None:
            return seconds
        return max(0.0, min(seconds, self.at - DEADLINE_MARGIN / 2 - time.monotonic()))


class _Waiting(io.RawIOBase):
    """The client's socket as the raw stream under a connection's buffered reader, whose reads
    can be bounded: while ``until`` (monotonic) is set, a read that finds no byte by then reads
    as the end of the stream. The buffered reader reads here only when its buffer is empty, so
    a request already received (pipelined) is never waited for. No socket timeout is set: it
    would flip O_NONBLOCK, a flag of the open file the daemon holds too, twice a request."""

    def __init__(self, client: socket.socket) -> None:
        super().__init__()
        self.raw = client.makefile("rb", buffering=0)
        self.until: float | None = None
        self.readable_soon = select.poll()  # not select.select, which fails on an fd over 1023
        self.readable_soon.register(client, select.POLLIN)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        if self.until is not None:
            left = self.until - time.monotonic()
            if left <= 0 or not self.readable_soon.poll(left * 1000):  # a hang-up or an error counts: recv tells
                return 0
        return self.raw.readinto(buffer)

    def close(self) -> None:
        self.raw.close()
        super().close()


class _Connection:
    """Reads requests off the client's socket, runs the WSGI app on each and keeps the connection
    alive (HTTP/1.1) for as long as every response ended cleanly and the deadline leaves time."""

    def __init__(self, client: socket.socket, metadata: dict[str, Any], app: WSGIApp) -> None:
        self.client = client
        self.metadata = metadata
        self.app = app
        self.peer = _peer(metadata, client)
        self.local = client.getsockname()
        self.reader = _Waiting(client)
        self.rfile = io.BufferedReader(self.reader)
        self.wfile = client.makefile("wb")  # buffered: status line, headers and a first chunk leave in one segment
        self.deadline = _Deadline.from_metadata(metadata)
        self.answered = 0  # responses sent

    def serve(self) -> None:
        # Each response is flushed on purpose; Nagle's algorithm would only delay it.
        self.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        try:
            while self._next_request_in_time() and self._serve_one(time.monotonic()):
                self.answered += 1
        finally:
            self.rfile.close()
            try:
                self.wfile.close()
            except OSError:  # the client is gone; what was left to send has nowhere to go
                pass

    def _next_request_in_time(self) -> bool:
        """Wait for the next request's first byte (or the end of the stream). On a kept-alive
        connection, only as long as one as slow as the slowest so far could still be served
        before the deadline: False then, and the idle connection closes before the kill."""
        if self.deadline.at is None:
            return True  # no deadline: reading the request does the waiting
        if self.answered:  # a first request is waited for as long as the client takes
            self.reader.until = self.deadline.request_cutoff()
        try:
            return bool(self.rfile.peek(1))  # what is buffered already, or one read
        finally:
            self.reader.until = None

    def _serve_one(self, started: float) -> bool:
        """Answer the next request, whose first byte came at ``started``; whether the connection may carry another."""
        try:
            head = _read_head(self.rfile)
            if head is None:
                return False
            body, length = self._request_body(head)
        except _Refused as refused:
            self._refuse(refused)
            return False
        keep_alive = _keep_alive(head)

        def log(status: str, size: int) -> None:
            _log(self.metadata, f'"{head.method} {head.target} {head.version}" {status} {size}')

        def last() -> bool:
            # More body left unread than is worth skipping, or no time left for another request:
            # the connection ends after this response, and the response says so.
            return not keep_alive or body.unread > MAX_DRAIN or not self.deadline.room_for_another(started)

        response = _Response(body, self.wfile, self._environ(head, length), last, log)
        response.run(self.app)
        self.deadline.slowest = max(self.deadline.slowest, time.monotonic() - started)
        return response.keep_alive and response.complete and body.drain(MAX_DRAIN)

    def _request_body(self, head: _Head) -> tuple[_Body, str]:
        """``wsgi.input`` and ``CONTENT_LENGTH`` for this request (RFC 9112 section 6)."""
        length = _body_length(head)
        self._continue(head)
        if length is None:
            data = _read_chunked(self.rfile)
            return _Body(io.BytesIO(data), len(data)), str(len(data))
        return _Body(self.rfile, length), str(length) if head.values("Content-Length") else ""

    def _continue(self, head: _Head) -> None:
        """Answer ``Expect: 100-continue`` at once: the client waits for it before the body (RFC 9110 10.1.1)."""
        if head.version == "HTTP/1.1" and "100-continue" in head.tokens("Expect"):
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()

    def _refuse(self, refused: _Refused) -> None:
        body = f"{refused.explain}\n".encode()
        head = (
            f"HTTP/1.1 {refused.status}\r\nServer: {SERVER_SOFTWARE}\r\n"
            f"Date: {wsgiref.handlers.format_date_time(time.time())}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self.wfile.write(head.encode("latin-1") + body)
        self.wfile.flush()
        _log(self.metadata, f"refused {refused.status[:3]}: {refused.explain}")

    def _environ(self, head: _Head, content_length: str) -> dict[str, Any]:
        """The CGI part of the PEP 3333 environ; wsgiref adds the ``wsgi.*`` keys."""
        authority, path, query = _split_target(head.target)
        content_types = head.values("Content-Type")
        # PEP 3333: bytes as latin-1, as wsgiref does
        script_name, path_info = _mounted(_unquote(path, "latin-1"), self.metadata)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": head.method,
            "SCRIPT_NAME": script_name,
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "REQUEST_URI": head.target,  # as sent, still percent-encoded; its path is ASGI's raw_path
            "SERVER_NAME": str(self.local[0]),
            "SERVER_PORT": str(self.local[1]),
            "SERVER_PROTOCOL": head.version,
            "REMOTE_ADDR": self.peer[0],
            "REMOTE_PORT": str(self.peer[1]),
            "CONTENT_TYPE": content_types[0] if content_types else "",
            "CONTENT_LENGTH": content_length,
            "wsgi.input_terminated": True,  # reading wsgi.input to the end stops at the body's end
            "faas.metadata": self.metadata,
        }
        for name, value in head.fields:
            key = "HTTP_" + name.upper().replace("-", "_")
            if "_" in name or key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                continue  # "X_User" would pose as "X-User" in the environ; dropped, as nginx does
            environ[key] = environ[key] + "," + value if key in environ else value
        if authority is not None:  # RFC 9112 3.2.2: the target's authority, not the Host field, names the host
            environ["HTTP_HOST"] = authority
        return environ


class _Response(wsgiref.handlers.SimpleHandler):
    """wsgiref's PEP 3333 half (start_response with exc_info, write(), the 500 page, the
    traceback in the log) with the HTTP/1.1 framing wsgiref lacks: Content-Length for a body
    known whole (a list or tuple), else chunked (or, for HTTP/1.0, the end of the connection); no
    body for HEAD, 1xx, 204 and 304, and no length that is forbidden or not known to be true."""

    http_version = "1.1"
    server_software = SERVER_SOFTWARE
    os_environ: dict[str, str] = {}  # wsgiref would copy the process environment into each request
    # What wsgiref's BaseHandler sets per response (typeshed leaves them out).
    environ: dict[str, Any]
    status: str | None
    headers: wsgiref.headers.Headers
    headers_sent: bool
    result: Any
    bytes_sent: int

    def __init__(
        self, body: _Body, wfile: Any, environ: dict[str, Any], last: Callable[[], bool], log: Callable[..., None]
    ) -> None:
        super().__init__(body, wfile, sys.stderr, environ, multithread=False, multiprocess=True)
        self.last = last  # asked as the headers leave: must the connection end after this response?
        self.log = log
        self.framing = "length"  # then "chunked", "close" or "none"
        self.in_body = False
        self.ended = False  # the app's body is over: what was sent is all of it
        self.keep_alive = False  # the headers left without "Connection: close"
        self.complete = False  # the response ended cleanly: the connection may carry another

    def cleanup_headers(self) -> None:
        assert self.status is not None, "wsgiref sends headers only after start_response"
        code = int(self.status[:3])
        known = self._known_length()
        if code < 200 or code == 204:
            self.framing = "none"
            del self.headers["Content-Length"]  # RFC 9110 8.6: never in a 1xx or 204
        elif code == 304 or self.environ["REQUEST_METHOD"] == "HEAD":
            # No body follows. The app's Content-Length is the one GET would have (RFC 9110 8.6,
            # 9.3.2); else a body the app gave whole tells it, but an empty one may be a HEAD's
            # body left out (Werkzeug does that) and tells nothing: then no framing is said at all.
            self.framing = "none"
            if code != 304 and known and "Content-Length" not in self.headers:
                self.headers["Content-Length"] = str(known)
        elif "Content-Length" in self.headers:
            pass
        elif known is not None:
            self.headers["Content-Length"] = str(known)
        elif self.environ["SERVER_PROTOCOL"] == "HTTP/1.1":
            self.framing = "chunked"
            self.headers["Transfer-Encoding"] = "chunked"
        else:
            self.framing = "close"
        self.keep_alive = self.framing != "close" and not self.last()
        if not self.keep_alive:
            self.headers["Connection"] = "close"

    def _known_length(self) -> int | None:
        """The body's length, where it is known before the headers leave."""
        if isinstance(self.result, (list, tuple)):
            return sum(len(part) for part in self.result)
        return self.bytes_sent if self.ended else None  # an iterable that ended before its first byte

    def finish_content(self) -> None:
        self.ended = True
        if not self.headers_sent:
            self.send_headers()  # wsgiref's would first add "Content-Length: 0", even where it is forbidden or false
        if self.framing == "chunked":
            self.in_body = False
            self._write(b"0\r\n\r\n")
        declared = self.headers.get("Content-Length")
        # A body shorter or longer than its Content-Length leaves the next request unframed.
        self.complete = self.framing != "close" and (self.framing != "length" or declared == str(self.bytes_sent))
        self._flush()  # the response leaves before any body the app left unread is drained

    def send_headers(self) -> None:
        super().send_headers()
        self.in_body = True

    def _write(self, data: bytes) -> None:
        if self.in_body:
            if self.framing == "none" or not data:
                return  # an empty chunk would end a chunked body early
            if self.framing == "chunked":
                data = b"%x\r\n%s\r\n" % (len(data), data)
        super()._write(data)

    def close(self) -> None:
        if self.status:  # one log line per response, as http.server writes for its own
            self.log(self.status[:3], self.bytes_sent)
        super().close()


class _Body(io.RawIOBase):
    """``wsgi.input``: the request body and no further, so the next request stays unread."""

    def __init__(self, stream: Any, length: int) -> None:
        super().__init__()
        self._stream = stream
        self._left = length

    def readable(self) -> bool:
        return True

    @property
    def unread(self) -> int:
        """Body bytes neither the app nor ``drain`` has read yet."""
        return self._left

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(min(len(buffer), self._left)) if self._left > 0 else b""
        self._left -= len(data)
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        limit = self._left if size is None or size < 0 else min(size, self._left)
        data = self._stream.readline(limit) if limit > 0 else b""
        self._left -= len(data)
        return data

    def drain(self, most: int) -> bool:
        """Skip what the app left unread; False when that is over ``most`` bytes or cut short."""
        if self._left > most:
            return False
        while self._left > 0 and self.read(65536):
            pass
        return self._left == 0


# RFC 9112 7.1: chunk-size [ BWS ";" chunk-ext ], the size in at most 20 hex digits (2**64 fits).
_CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})[ \t]*(?:;[^\n]*)?\r?\n")


def _read_chunked(rfile: Any) -> bytes:
    """A whole chunked body (RFC 9112 7.1), read up front so the app sees a plain CONTENT_LENGTH."""
    body = bytearray()
    while True:
        line = rfile.readline(MAX_LINE)
        size = _CHUNK_SIZE_LINE.fullmatch(line)
        if size is None:
            raise _Refused("400 Bad Request", f"Bad chunk size line {line[:40]!r}")
        length = int(size[1], 16)
        if length == 0:
            break
        if len(body) + length > MAX_CHUNKED_BODY:
            raise _Refused("413 Content Too Large", f"Chunked body over {MAX_CHUNKED_BODY} bytes")
        chunk = rfile.read(length)
        if len(chunk) < length or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise _Refused("400 Bad Request", "Chunk cut short or not followed by CRLF")
        body += chunk
    _read_fields(rfile, "trailer")  # checked as header fields are; nothing in WSGI carries them
    return bytes(body)


def _peer(metadata: dict[str, Any], client: socket.socket) -> tuple[str, int]:
    """The client's address: the daemon's ``peer`` ("ip:port"), else the socket's own."""
    host, _, port = str(metadata.get("peer", "")).rpartition(":")
    if host and port.isdigit():
        return host.strip("[]"), int(port)
    return client.getpeername()[:2]
