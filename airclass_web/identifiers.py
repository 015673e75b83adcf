"""User ids are plain: ASCII letters, digits and `_ . @ -`, at most 128 characters.

Checked where a user id enters the node (a token request, a class WebSocket's token);
anything else gets 400. Server-made ids (`student-1a2b`, `stu_...`, `monitor-kim`) and
teacher usernames (`teachers.USERNAME`) all fit; a newline, a space, a colon (TURN user
names are `EXPIRY:USER`) or a terminal escape never does.
"""

from __future__ import annotations

import re

USER_ID = re.compile(r"[A-Za-z0-9_.@-]{1,128}")
USER_ID_RULE = "user_id must be 1-128 letters, digits, '_', '.', '@' or '-'"


def valid_user_id(value: object) -> bool:
    """True for a user id of the safe character set."""
    return isinstance(value, str) and USER_ID.fullmatch(value) is not None
