"""Who may act on dossiers, and who is acting now: users, API tokens, citizens' lookup secrets, claims.

Tables on the registry's declarative base (created with the registry's, in the same database):

- ``users``: username, display name, roles, password hash (scrypt, parameters kept in the hash), active.
- ``api_tokens``: a token for programs acting as a user in one role (its scope); only its SHA-256 is
  kept, and the token is shown once, when issued.
- ``lookup_secrets``: the SHA-256 of each lookup secret printed on a citizen's copy of a form; the
  secret itself is never stored.
- ``dossier_claims``: the step in progress on a dossier, if any. A step that signs or writes objects
  first claims the dossier (under the dossier's row lock), so that of several runs at once exactly one
  does the work; its final transition checks and ends the claim in the same transaction. A claim left by
  a crashed process expires and can then be taken over.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy import exc
from sqlalchemy.orm import Mapped, Session, mapped_column

from pipeline.core.errors import DossierBusy, Forbidden, InvalidRequest, InvalidState
from pipeline.core.models import Role
from storage.registry import Base, Dossier, Registry, UTCDateTime, utcnow

__all__ = [
    "ApiToken",
    "Claim",
    "DossierClaim",
    "Identity",
    "LookupSecret",
    "TokenRecord",
    "User",
    "UserRecord",
    "hash_password",
    "new_lookup_secret",
    "verify_password",
]

# scrypt at the cost OWASP recommends (N=2^17, r=8, p=1: 128 MiB, ~0.2–0.4 s here); the parameters are
# part of each stored hash, so raising them later leaves older hashes verifiable.
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 17, 8, 1
MIN_PASSWORD = 10
TOKEN_PREFIX = "hoso_"
USERNAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")


# --- ORM ----------------------------------------------------------------------------------------


class User(Base):
    __tablename__ = "users"

    username: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(sa.String(200))
    roles: Mapped[list[str]] = mapped_column(sa.JSON)
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(sa.ForeignKey("users.username", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    scope: Mapped[str] = mapped_column(sa.String(32))
    label: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class LookupSecret(Base):
    __tablename__ = "lookup_secrets"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    dossier_code: Mapped[str] = mapped_column(sa.ForeignKey("dossiers.code", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    form: Mapped[str] = mapped_column(sa.String(128))  # the artifact whose citizen's copy carries it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DossierClaim(Base):
    __tablename__ = "dossier_claims"

    dossier_code: Mapped[str] = mapped_column(
        sa.ForeignKey("dossiers.code", ondelete="CASCADE"), primary_key=True
    )
    action: Mapped[str] = mapped_column(sa.String(64))
    holder: Mapped[str] = mapped_column(sa.String(128))
    token: Mapped[str] = mapped_column(sa.String(64))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- records ------------------------------------------------------------------------------------


class UserRecord(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    username: str
    display_name: str
    roles: list[Role]
    active: bool
    created_at: datetime
    updated_at: datetime


class TokenRecord(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    scope: Role
    label: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class Claim:
    """A held claim on a dossier: pass it to the step's final transition (:meth:`Identity.guard`)."""

    dossier_code: str
    action: str
    holder: str
    token: str
    expires_at: datetime


# --- secrets ------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + (1 << 20), dklen=32)


def hash_password(password: str) -> str:
    """``scrypt$<log2 N>$<r>$<p>$<salt>$<hash>`` (base64) for ``password``."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_LOG2_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (compared in constant time); False for a malformed hash."""
    try:
        scheme, log2_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or not 10 <= int(log2_n) <= 20:
            return False
        actual = _scrypt(password, base64.b64decode(salt), int(log2_n), int(r), int(p))
        return hmac.compare_digest(actual, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_lookup_secret() -> str:
    """A citizen's lookup secret: 16 URL-safe characters (96 random bits), short enough for an A5 QR code."""
    return secrets.token_urlsafe(12)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidRequest(
            f"password too short (at least {MIN_PASSWORD} characters)",
            f"Mật khẩu quá ngắn (tối thiểu {MIN_PASSWORD} ký tự).",
        )


def _no_user(username: str) -> Forbidden:
    return Forbidden(f"no active user {username!r}", f"Không có người dùng đang hoạt động với tên {username!r}.")


# A hash to spend the same time on when the user does not exist (no user enumeration by timing).
_DUMMY_HASH = f"scrypt${SCRYPT_LOG2_N}${SCRYPT_R}${SCRYPT_P}${_b64(b'0' * 16)}${_b64(b'0' * 32)}"


# --- the directory ------------------------------------------------------------------------------


class Identity:
    """Users, tokens, lookup secrets and claims in the registry's database; every method is one transaction
    (the ``guard`` and ``record_lookup_secret`` ones join the caller's)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # -- users

    def add_user(
        self, username: str, display_name: str, roles: Iterable[Role], password: str | None, *, active: bool = True
    ) -> UserRecord:
        """A new user; InvalidState if the name is taken; InvalidRequest if it is malformed, the password too
        short or no role given."""
        if not USERNAME.match(username):
            raise InvalidRequest(
                f"invalid username {username!r} (a–z first, then a–z, 0–9, '.', '_', '-'; 2–64 characters)",
                f"Tên đăng nhập không hợp lệ: {username!r} (chữ thường không dấu, số, '.', '_', '-').",
            )
        roles = sorted({Role(r) for r in roles})
        if not roles:
            raise InvalidRequest("a user needs at least one role", "Người dùng cần ít nhất một vai trò.")
        if password is not None:
            _check_password(password)
        now = utcnow()
        row = User(
            username=username, display_name=display_name.strip() or username, roles=[r.value for r in roles],
            password_hash=None if password is None else hash_password(password), active=active,
            created_at=now, updated_at=now,
        )
        try:
            with self.registry.transaction() as session:
                session.add(row)
        except exc.IntegrityError as err:
            raise InvalidState(f"user {username!r} exists", f"Tên đăng nhập {username!r} đã tồn tại.") from err
        return UserRecord.model_validate(row)

    def user(self, username: str) -> UserRecord | None:
        with self.registry.transaction() as session:
            row = session.get(User, username)
            return None if row is None else UserRecord.model_validate(row)

    def users(self) -> list[UserRecord]:
        with self.registry.transaction() as session:
            return [UserRecord.model_validate(u) for u in session.scalars(sa.select(User).order_by(User.username))]

    def _update(self, username: str, change: Callable[[User], None]) -> UserRecord:
        with self.registry.transaction() as session:
            row = session.get(User, username, with_for_update=True)
            if row is None:
                raise Forbidden(f"no user {username!r}", f"Không có người dùng {username!r}.")
            change(row)
            row.updated_at = utcnow()
            return UserRecord.model_validate(row)

    def set_password(self, username: str, password: str) -> UserRecord:
        _check_password(password)
        digest = hash_password(password)
        return self._update(username, lambda row: setattr(row, "password_hash", digest))

    def set_active(self, username: str, active: bool) -> UserRecord:
        return self._update(username, lambda row: setattr(row, "active", active))

    def set_roles(self, username: str, roles: Iterable[Role]) -> UserRecord:
        values = sorted({Role(r).value for r in roles})
        if not values:
            raise InvalidRequest("a user needs at least one role", "Người dùng cần ít nhất một vai trò.")
        return self._update(username, lambda row: setattr(row, "roles", values))

    def active_user(self, username: str) -> UserRecord:
        """The user, if active; Forbidden otherwise (for a trusted interface naming the user, e.g. the CLI)."""
        user = self.user(username)
        if user is None or not user.active:
            raise _no_user(username)
        return user

    def authenticate(self, username: str, password: str) -> UserRecord:
        """The active user whose password this is; Forbidden (the same answer for every failure) otherwise."""
        with self.registry.transaction() as session:
            row = session.get(User, username)
            stored = row.password_hash if row is not None and row.active and row.password_hash else None
            ok = verify_password(password, stored or _DUMMY_HASH) and stored is not None
            if not ok or row is None:
                raise Forbidden(
                    f"authentication failed for {username!r}",
                    "Sai tên đăng nhập hoặc mật khẩu, hoặc tài khoản bị khóa.",
                )
            return UserRecord.model_validate(row)

    # -- API tokens

    def issue_token(
        self, username: str, scope: Role, *, label: str | None = None, expires_at: datetime | None = None
    ) -> tuple[str, TokenRecord]:
        """A new token acting as ``username`` in role ``scope`` (one the user holds); the token is returned
        once and only its hash kept."""
        user = self.active_user(username)
        scope = Role(scope)
        if scope not in user.roles:
            raise Forbidden(
                f"user {username!r} does not hold role {scope.value!r}",
                f"Người dùng {username!r} không có vai trò {scope.value!r} để cấp mã truy cập.",
            )
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = ApiToken(
            username=username, token_hash=_sha256(token), scope=scope.value, label=label, created_at=utcnow(),
            expires_at=expires_at,
        )
        with self.registry.transaction() as session:
            session.add(row)
        return token, TokenRecord.model_validate(row)

    def tokens(self, username: str | None = None) -> list[TokenRecord]:
        stmt = sa.select(ApiToken).order_by(ApiToken.id)
        if username is not None:
            stmt = stmt.where(ApiToken.username == username)
        with self.registry.transaction() as session:
            return [TokenRecord.model_validate(t) for t in session.scalars(stmt)]

    def revoke_token(self, token_id: int) -> TokenRecord:
        with self.registry.transaction() as session:
            row = session.get(ApiToken, token_id, with_for_update=True)
            if row is None:
                raise Forbidden(f"no token {token_id}", f"Không có mã truy cập số {token_id}.")
            row.revoked_at = row.revoked_at or utcnow()
            return TokenRecord.model_validate(row)

    def authenticate_token(self, token: str, *, now: datetime | None = None) -> tuple[UserRecord, Role]:
        """The user and the one role a token acts in; Forbidden if it is unknown, revoked, expired, its user
        inactive, or the user no longer holds the role."""
        now = now or utcnow()
        refused = Forbidden("invalid API token", "Mã truy cập không hợp lệ, đã hết hạn hoặc đã bị thu hồi.")
        if not token.startswith(TOKEN_PREFIX):
            raise refused
        with self.registry.transaction() as session:
            row = session.scalars(sa.select(ApiToken).where(ApiToken.token_hash == _sha256(token))).one_or_none()
            if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
                raise refused
            user = session.get(User, row.username)
            if user is None or not user.active or row.scope not in user.roles:
                raise refused
            row.last_used_at = now
            return UserRecord.model_validate(user), Role(row.scope)

    # -- citizens' lookup secrets

    @staticmethod
    def record_lookup_secret(session: Session, code: str, secret: str, form: str, at: datetime) -> None:
        """Keep the hash of ``secret`` (printed on the citizen's copy of ``form``), in the caller's transaction."""
        session.add(LookupSecret(dossier_code=code, secret_hash=_sha256(secret), form=form, created_at=at))

    def check_lookup_secret(self, code: str, secret: str) -> bool:
        """Whether ``secret`` is one of those printed on a citizen's copy of dossier ``code``'s forms."""
        with self.registry.transaction() as session:
            found = session.scalar(
                sa.select(LookupSecret.id).where(
                    LookupSecret.dossier_code == code, LookupSecret.secret_hash == _sha256(secret)
                )
            )
            return found is not None

    # -- claims

    def claim(
        self,
        code: str,
        action: str,
        holder: str,
        *,
        check: Callable[[Dossier], None],
        ttl: timedelta,
        now: datetime | None = None,
    ) -> Claim:
        """Claim dossier ``code`` for ``action``: under its row lock, ``check`` the dossier (it raises to refuse,
        e.g. InvalidState for the wrong state), then take the claim; DossierBusy while another live claim holds it."""
        now = now or utcnow()
        with self.registry.locked(code) as (session, row):
            held = session.get(DossierClaim, code)
            if held is not None and held.expires_at > now:
                raise DossierBusy(
                    f"dossier {code} is being worked on: {held.action!r} by {held.holder!r} since "
                    f"{held.claimed_at.isoformat(timespec='seconds')}",
                    f"Hồ sơ {code} đang được xử lý (bước {held.action}, người thực hiện {held.holder}); "
                    "vui lòng thử lại sau.",
                )
            check(row)
            if held is not None:  # expired: its holder crashed or hung
                session.delete(held)
                session.flush()
            claim = Claim(code, action, holder, secrets.token_hex(16), now + ttl)
            session.add(DossierClaim(
                dossier_code=code, action=action, holder=holder, token=claim.token, claimed_at=now,
                expires_at=claim.expires_at,
            ))
            return claim

    def holds(self, claim: Claim) -> bool:
        """Whether ``claim`` is still the dossier's claim (not released, not taken over after expiring)."""
        with self.registry.transaction() as session:
            row = session.get(DossierClaim, claim.dossier_code)
            return row is not None and row.token == claim.token

    def release(self, claim: Claim) -> bool:
        """Give ``claim`` up (a step that failed); False if it was no longer held."""
        with self.registry.transaction() as session:
            row = session.get(DossierClaim, claim.dossier_code, with_for_update=True)
            if row is None or row.token != claim.token:
                return False
            session.delete(row)
            return True

    @staticmethod
    def guard(claim: Claim | None, *, end: bool, now: datetime | None = None) -> Callable[[Session, Dossier], None]:
        """A ``Registry.transition`` guard: with ``claim``, the transition goes ahead only while the claim
        holds (and ends it if ``end``); without, only while no other live claim holds the dossier."""

        def check(session: Session, row: Dossier) -> None:
            held = session.get(DossierClaim, row.code)
            if claim is None:
                if held is not None and held.expires_at > (now or utcnow()):
                    raise DossierBusy(
                        f"dossier {row.code} is being worked on: {held.action!r} by {held.holder!r}",
                        f"Hồ sơ {row.code} đang được xử lý (bước {held.action}); vui lòng thử lại sau.",
                    )
                return
            if held is None or held.token != claim.token:
                raise DossierBusy(
                    f"the claim of {claim.holder!r} on {row.code} for {claim.action!r} was lost (expired, taken over)",
                    f"Bước {claim.action} trên hồ sơ {row.code} đã quá thời gian và bị hủy; vui lòng thực hiện lại.",
                )
            if end:
                session.delete(held)

        return check
