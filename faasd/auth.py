"""Access to the control API over TCP: the bearer token and the checks around it.

The unix socket needs no token: its file mode (0660, root and the ``faas`` group) is the
guard, as for docker's socket. The optional TCP listener has no such guard, so every
request on it must carry ``Authorization: Bearer <token>`` (RFC 6750, section 2.1). The
token is made once, kept in the state dir with mode 0600, and never logged.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import stat
import tempfile
from pathlib import Path

from faasd.config import TcpAddress

TOKEN_BYTES = 32
# RFC 6750 b64token: what a token may look like on the wire; ours are base64url.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9\-._~+/]{32,512}=*")


class TokenFileError(Exception):
    """The token file cannot be used; the message says how to repair it."""


def load_or_create_token(path: Path) -> str:
    """The token in ``path``; on first use a new random one, written atomically with mode 0600."""
    try:
        return _read_token(path)
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(TOKEN_BYTES)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".api.token.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    return token


def _read_token(path: Path) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            status = os.fstat(file.fileno())
            if status.st_uid != os.geteuid() or status.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise TokenFileError(
                    f"{path} is open to others (owner uid {status.st_uid}, mode {stat.S_IMODE(status.st_mode):04o}): "
                    "the token may have leaked; delete the file to get a new token on start"
                )
            token = file.read().strip()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise TokenFileError(f"cannot read the token in {path}: {exc.strerror}") from exc
    if not TOKEN_PATTERN.fullmatch(token):
        raise TokenFileError(f"{path} does not hold a usable token: delete it to get a new one on start")
    return token


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None for other schemes."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def token_matches(expected: str, presented: str) -> bool:
    """Compare in constant time, so timing does not reveal how much of a guess was right."""
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "surrogateescape"))


def exposure_warning(address: TcpAddress) -> str | None:
    """What to tell the operator when the TCP API is reachable from beyond this host."""
    if address.host.is_loopback:
        return None
    return (
        f"the control API listens on {address}, which is not a loopback address: the bearer token "
        "and images travel in clear text, so put it behind a TLS proxy or listen on 127.0.0.1"
    )
