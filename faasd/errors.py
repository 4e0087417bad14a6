"""The one exception family of faasd.

Every error a user can meet is a ``FaasError`` carrying the HTTP status the control API
answers with and a message that says what to do. Errors are raised deep, chained with
``from`` to their cause, and translated to HTTP once, in ``faasd.api``.

    FaasError (500)
    ├── InvalidRequest (400)         bad name, bad header, bad query value
    │   ├── InvalidImage (400)       the archive is not a usable image
    │   │   ├── UnsafeArchive (400)  the archive tries to escape its rootfs
    │   │   └── NotATemplate (422)   --sandbox fork for an image whose handler cannot fork per connection
    │   ├── InvalidCode (400)        source code that cannot serve: a syntax error, no handler
    │   └── UploadCut (400)          the client hung up before the upload ended
    ├── Unauthorized (401)           the TCP API was called without the right bearer token
    ├── RegistryDenied (403)         an image registry refused the credentials, or asks for some
    ├── NotFound (404)               no function by that name
    ├── Conflict (409)               the operation collides with current state
    ├── CheckFailed (422)            faas new --check: the new version's handler never got ready
    ├── Busy (503)                   no container slot came free for a one-shot container (run, job, check)
    ├── ImageTooLarge (413)          the upload or its unpacked size is over the limit
    ├── InsufficientStorage (507)    the disk filled up during an import
    ├── RegistryUnavailable (502)    an image registry is down, slow, or answered out of protocol
    └── RuntimeFailure (500)         runc or the kernel refused an operation
        └── RuncError (500)          runc exited non-zero (status and stderr attached)
"""

from __future__ import annotations


class FaasError(Exception):
    """Base class: an error with an HTTP status and a message for the user."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def in_context(self, context: str) -> FaasError:
        """The same kind of error with ``context`` in front ("layer 2: entry 'x': ...")."""
        return type(self)(f"{context}: {self.message}")


class InvalidRequest(FaasError):
    """Raised when a name, header or parameter from the client is malformed."""

    status = 400


class InvalidImage(InvalidRequest):
    """Raised when an uploaded archive is not a readable docker-save or OCI image."""


class InvalidCode(InvalidRequest):
    """Raised when a function's source cannot be deployed: a syntax error, a missing entry or handler."""


class UnsafeArchive(InvalidImage):
    """Raised when an archive entry would land outside the rootfs or write through a link."""


class NotATemplate(InvalidImage):
    """Raised when a version deployed with ``--sandbox fork`` did not become a template: its
    handler does not serve through the SDK's ``serve()`` (or its app cannot be forked)."""

    status = 422


class UploadCut(InvalidRequest):
    """Raised when the client hangs up, or breaks the body's framing, before its upload ends."""


class Unauthorized(FaasError):
    """Raised when a request on the TCP listener lacks the bearer token or carries a wrong one."""

    status = 401


class RegistryDenied(FaasError):
    """Raised when an image registry refuses a pull or a login: no credentials, or wrong ones.

    Not 401: that status belongs to faasd's own token, and faas reads it so.
    """

    status = 403


class RegistryUnavailable(FaasError):
    """Raised when an image registry cannot be reached, does not answer in time, or answers
    with something the distribution API does not allow."""

    status = 502


class NotFound(FaasError):
    """Raised when a function (or version) does not exist."""

    status = 404


class Conflict(FaasError):
    """Raised when the request collides with the current state (e.g. the IP range is full)."""

    status = 409


class CheckFailed(FaasError):
    """Raised when a deploy's check finds that the new version's handler exits or never connects."""

    status = 422


class Busy(FaasError):
    """Raised when a one-shot container (a run, a job, a deploy's check) finds every container
    slot taken (``faasd --max-containers``) and none comes free within the queue timeout."""

    status = 503


class ImageTooLarge(FaasError):
    """Raised when an upload or its unpacked content exceeds the configured limit."""

    status = 413


class InsufficientStorage(FaasError):
    """Raised when the state directory's filesystem runs out of space or quota (ENOSPC, EDQUOT)."""

    status = 507


class RuntimeFailure(FaasError):
    """Raised when the container runtime or the kernel refuses an operation."""

    status = 500


class RuncError(RuntimeFailure):
    """Raised when a runc command exits non-zero."""

    def __init__(self, verb: str, returncode: int, stderr: str) -> None:
        super().__init__(f"runc {verb} failed with exit status {returncode}: {stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr

    def in_context(self, context: str) -> FaasError:
        return RuntimeFailure(f"{context}: {self.message}")
