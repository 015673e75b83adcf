"""Log lines that nobody can forge: control characters in messages are escaped.

A user id, a name or a stream that reaches a log message may hold a newline (a forged
second line) or a terminal escape; `SafeFormatter` writes every control character of the
message (and of its arguments) as `\\xNN` / `\\uNNNN`, so one record is one line. Only the
traceback of an exception keeps its newlines (it is ours, not user input).
"""

from __future__ import annotations

import logging
import re
import sys

#: C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_char(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """text with every control character written as an escape (one printable line)."""
    return _CONTROL.sub(_escape_char, text)


class SafeFormatter(logging.Formatter):
    """logging.Formatter whose message part never holds a control character."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging API
        safe = logging.makeLogRecord(record.__dict__)
        safe.message = escape_controls(record.message)
        return super().formatMessage(safe)


def setup_logging(level: str, fmt: str) -> None:
    """The root logger writes to stderr through a SafeFormatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(fmt))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
