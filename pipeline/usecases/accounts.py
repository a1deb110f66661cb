"""Staff accounts managed by an administrator (the admin page of ``hoso serve``): list, add with a hashed
password, change roles, lock and unlock. Every function checks that the acting user holds the admin role
(Forbidden otherwise), and an administrator cannot lock themself out (their own lock or admin role)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pipeline.core.errors import Forbidden, InvalidRequest
from pipeline.core.models import Role
from pipeline.domain.lifecycle import Actor
from pipeline.usecases.lifecycle import identity
from pipeline.usecases.services import Services
from storage.identity import UserRecord

log = logging.getLogger(__name__)


def _admin(actor: Actor) -> None:
    if Role.admin not in actor.roles or actor.batch:
        raise Forbidden(f"{actor.username} is not an administrator", "Chỉ quản trị hệ thống được quản lý tài khoản.")


def _not_self(actor: Actor, username: str, what: str) -> None:
    if username == actor.username:
        raise InvalidRequest(f"an administrator may not {what} their own account",
                             "Không thể tự khóa hoặc tự bỏ vai trò quản trị của chính mình.")


def users(services: Services, actor: Actor) -> list[UserRecord]:
    _admin(actor)
    return identity(services).users()


def add_user(services: Services, actor: Actor, username: str, display_name: str, roles: Iterable[Role],
             password: str) -> UserRecord:
    """A new active user; the password is kept as a scrypt hash only (``storage/identity.py``)."""
    _admin(actor)
    user = identity(services).add_user(username.strip(), display_name, roles, password)
    log.info("user %s added by %s with roles %s", user.username, actor.username, [r.value for r in user.roles])
    return user


def set_roles(services: Services, actor: Actor, username: str, roles: Iterable[Role]) -> UserRecord:
    _admin(actor)
    roles = set(roles)
    if Role.admin not in roles:
        _not_self(actor, username, "drop the admin role of")
    user = identity(services).set_roles(username, roles)
    log.info("roles of %s set to %s by %s", username, [r.value for r in user.roles], actor.username)
    return user


def set_locked(services: Services, actor: Actor, username: str, locked: bool) -> UserRecord:
    """Lock (sessions and API tokens stop working at once: every request reads the user again) or unlock."""
    _admin(actor)
    if locked:
        _not_self(actor, username, "lock")
    user = identity(services).set_active(username, not locked)
    log.info("user %s %s by %s", username, "locked" if locked else "unlocked", actor.username)
    return user
