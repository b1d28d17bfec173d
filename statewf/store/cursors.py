"""Opaque keyset cursors for pages of instances ordered by (created_at, id)."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from statewf.errors import InvalidInput


def encode_cursor(created_at: datetime, instance_id: str) -> str:
    """An opaque cursor for keyset pagination on (created_at, id)."""
    raw = json.dumps([created_at.isoformat(), instance_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor stands for; :class:`InvalidInput` if it is not ours."""
    try:
        created, instance_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("naive time in cursor")
        return when, str(instance_id)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            f"cursor {cursor[:40]!r} is not valid; pass the next_cursor of a previous page"
        ) from exc
