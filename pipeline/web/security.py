"""Who is asking: staff sessions (server-side, cookie holds only a random id), CSRF tokens, API bearer
tokens, and the per-client rate limit of the public lookups.

Sessions live in this process's memory: a restart signs everyone out, and ``hoso serve`` runs one process
(uvicorn without ``--workers``) so that every request sees the same sessions and limits.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from pipeline.core.models import Role

SESSION_COOKIE = "hoso_session"
CSRF_COOKIE = "hoso_csrf"  # double-submit token of anonymous forms (the public verify upload)
CSRF_FIELD = "csrf_token"


@dataclass
class StaffSession:
    """A signed-in user: the roles they hold, the CSRF token of their forms."""

    username: str
    display_name: str
    roles: frozenset[Role]
    expires: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class SessionStore:
    """Sessions by a random id; expired ones are dropped when met."""

    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self._sessions: dict[str, StaffSession] = {}
        self._lock = threading.Lock()

    def create(self, username: str, display_name: str, roles: frozenset[Role]) -> tuple[str, StaffSession]:
        sid = secrets.token_urlsafe(32)
        session = StaffSession(username, display_name, roles, time.monotonic() + self.lifetime_s)
        with self._lock:
            self._prune()
            self._sessions[sid] = session
        return sid, session

    def get(self, sid: str | None) -> StaffSession | None:
        if not sid:
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and session.expires <= time.monotonic():
                del self._sessions[sid]
                return None
            return session

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)

    def _prune(self) -> None:
        now = time.monotonic()
        for sid in [s for s, v in self._sessions.items() if v.expires <= now]:
            del self._sessions[sid]


def same_token(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison of a submitted token with the expected one (both must be non-empty)."""
    return bool(given and expected) and hmac.compare_digest(str(given).encode(), str(expected).encode())


class RateLimiter:
    """At most ``limit`` events per ``window_s`` seconds per key (a sliding window)."""

    def __init__(self, limit: int, window_s: float = 60.0, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> tuple[bool, int]:
        """Whether one more event of ``key`` is allowed now, and else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= self.max_keys:  # a flood of addresses: forget the idle ones
                    self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.window_s}
                hits = self._hits[key] = deque()
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                return False, max(1, int(hits[0] + self.window_s - now + 1))
            hits.append(now)
            return True, 0
