"""Who may ask the national-database service what: bearer tokens per client, with scopes.

The service keeps a clients file (``HOSO_NATDB_CLIENTS_FILE`` or ``--clients``), YAML::

    clients:
      - name: worker
        scopes: [verify, read, write]
        token_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

Only the SHA-256 of each token is stored: a token is 32 random bytes, so a fast hash is as good as a
slow one, and a leaked clients file lets nobody in. Scopes:

- ``verify``: ask whether an ID belongs to a name and date of birth (the population DB),
- ``read``: list a citizen's stored documents (names, dates of birth and object keys among them),
- ``write``: store documents that later dossiers reuse (the worker only; never a public client).

``python -m pipeline.national.service issue-token --client NAME --scope S… --clients FILE`` makes a token,
adds its hash to the file and prints the token once.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from pipeline.core.errors import ConfigurationError

Scope = Literal["verify", "read", "write"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
#: Longer Authorization values are refused unread (tokens from :func:`new_token` are 43 characters).
MAX_TOKEN_LENGTH = 256


def new_token() -> str:
    """A fresh bearer token: 32 random bytes, URL-safe base64."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Client(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    scopes: frozenset[Scope]
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("scopes", mode="before")
    @classmethod
    def _listed(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError("scopes is a list, e.g. [verify, read]")
        return value


class Clients(BaseModel):
    clients: list[Client] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Clients:
        names = [c.name for c in self.clients]
        hashes = [c.token_sha256 for c in self.clients]
        if len(set(names)) != len(names):
            raise ValueError("client names must be unique")
        if len(set(hashes)) != len(hashes):
            raise ValueError("two clients share one token")
        return self

    def authenticate(self, authorization: str | None) -> Client | None:
        """The client whose token the ``Authorization: Bearer …`` value carries, else None.

        Every stored hash is compared, in constant time, whatever matches first.
        """
        if not authorization or len(authorization) > MAX_TOKEN_LENGTH + 7:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        presented = token_hash(token)
        found = None
        for client in self.clients:
            if hmac.compare_digest(presented, client.token_sha256):
                found = client
        return found


def _config_error(path: Path, problem: str) -> ConfigurationError:
    return ConfigurationError(
        f"national-database clients file {path}: {problem}",
        "Tệp danh sách máy khách của dịch vụ cơ sở dữ liệu quốc gia không hợp lệ.",
    )


def load_clients(path: Path) -> Clients:
    """The clients file at ``path``; a ConfigurationError (exit 17) names what is wrong with it."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise _config_error(path, f"cannot read it: {err.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise _config_error(path, f"not YAML: {err}") from None
    try:
        return Clients.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in err.errors())
        raise _config_error(path, problems) from None


def add_client(path: Path, name: str, scopes: list[Scope]) -> str:
    """Add (or replace) client ``name`` with a new token in the clients file; return the token.

    The file is written whole to a temporary file beside it and renamed, mode 0600.
    """
    clients = load_clients(path).clients if path.exists() else []
    token = new_token()
    try:
        added = Client(name=name, scopes=frozenset(scopes), token_sha256=token_hash(token))
    except ValidationError as err:
        raise _config_error(path, f"client {name!r}: {err.errors()[0]['msg']}") from None
    updated = [*(c for c in clients if c.name != name), added]
    data = {
        "clients": [
            {"name": c.name, "scopes": [s for s in SCOPES if s in c.scopes], "token_sha256": c.token_sha256}
            for c in Clients(clients=updated).clients
        ]
    }
    text = "# hoso national-database service clients (tokens stored as SHA-256 only)\n" + yaml.safe_dump(
        data, sort_keys=False
    )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return token
