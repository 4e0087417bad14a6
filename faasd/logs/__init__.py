"""Per-function logs: each container's stdout and stderr, line by line, in size-capped rotated files.

Every line on disk reads ``TIME REQUEST-ID STREAM TEXT``: an RFC 3339 UTC time with microseconds
(fixed width, so times compare as text), the connection's request id, ``stdout``, ``stderr`` or
``faasd`` (the daemon's own record of how the connection ended), then the text. Files live in
``state/logs/<function>/``: ``current`` and the rotated ``current.1`` (newer) ... ``current.N``.

On the way to disk nothing can grow the daemon's memory or stall it: a line is cut at
``max_line_bytes``; output waiting for the disk is capped at ``max_buffered_bytes`` per function
and what does not fit is dropped (and counted in the connection's record); pipes are read by the
event loop without ever blocking, and files are written by a thread of their own.

The modules, in the order output travels: ``capture`` (a container's pipes), ``records`` (lines
and their format), ``writer`` (the bounded buffer and the log thread), ``files`` (append and
rotate), ``reader`` (tail, since and follow) and ``query`` (what a client asked for).
"""

from faasd.logs.query import LogQuery, parse_query
from faasd.logs.reader import read_log
from faasd.logs.writer import FunctionLog, Logs

__all__ = ["FunctionLog", "LogQuery", "Logs", "parse_query", "read_log"]
