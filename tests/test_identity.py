"""Users, API tokens, lookup secrets and claims (storage/identity.py) on SQLite and a real PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

import storage.identity as identity_module
from pipeline.core.errors import DossierBusy, Forbidden, InvalidRequest, InvalidState
from pipeline.core.models import DossierState, Role
from storage.identity import Identity, hash_password, new_lookup_secret, verify_password
from storage.registry import Registry

RECEIVED = datetime(2025, 3, 3, 9, 30, tzinfo=UTC)
PASSWORD = "mat-khau-rat-dai"


@pytest.fixture
def cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scrypt at N=2^12 for tests that create many users (the stored hash names its own cost)."""
    monkeypatch.setattr(identity_module, "SCRYPT_LOG2_N", 12)


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    reg = Registry(registry_url)
    yield reg
    reg.close()


@pytest.fixture
def ident(registry: Registry, cheap_kdf: None) -> Identity:
    return Identity(registry)


def dossier(reg: Registry, name: str = "d") -> str:
    rec = reg.reserve(
        input_sha256=hashlib.sha256(name.encode()).hexdigest(), input_name=f"{name}.pdf", procedure="khai_sinh",
        procedure_code=None, agency_code="000.00.00.H00", received_at=RECEIVED, due_at=RECEIVED + timedelta(days=3),
        applicant_id=None, actor="desk",
    )
    reg.finalize_intake(rec.code, state=DossierState.received, intake_status="accepted", documents=[], artifacts=[],
                        receipt={}, actor="desk")
    return rec.code


def table_text(reg: Registry) -> str:
    """Every row of every table, as text: what a copy of the database would give away."""
    out = []
    with reg.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            out += [repr(tuple(row)) for row in conn.execute(sa.text(f'SELECT * FROM "{table}"'))]
    return "\n".join(out)


@pytest.mark.slow  # scrypt at full cost, several times
def test_passwords_are_scrypt_hashes_that_carry_their_cost() -> None:
    stored = hash_password(PASSWORD)
    scheme, log2_n, r, p, salt, digest = stored.split("$")
    assert (scheme, log2_n, r, p) == ("scrypt", "17", "8", "1")  # OWASP's minimum for scrypt
    assert PASSWORD not in stored and hash_password(PASSWORD) != stored  # salted
    assert verify_password(PASSWORD, stored) and not verify_password(PASSWORD + "x", stored)
    for malformed in ("", "plain", "bcrypt$1$2$3$4$5", "scrypt$40$8$1$AA==$AA==", "scrypt$x$8$1$AA==$AA=="):
        assert not verify_password(PASSWORD, malformed)


def test_users_roles_and_passwords(ident: Identity, registry: Registry) -> None:
    lan = ident.add_user("lan", "Nguyễn Thị Lan", [Role.desk, Role.clerk, Role.desk], PASSWORD)
    assert lan.roles == [Role.clerk, Role.desk] and lan.active
    assert ident.authenticate("lan", PASSWORD).display_name == "Nguyễn Thị Lan"
    for name, password in (("lan", "sai-mat-khau-roi"), ("nobody", PASSWORD), ("", "")):
        with pytest.raises(Forbidden) as err:
            ident.authenticate(name, password)
        assert err.value.message_vi == "Sai tên đăng nhập hoặc mật khẩu, hoặc tài khoản bị khóa."  # one answer
    with pytest.raises(InvalidState, match="exists"):
        ident.add_user("lan", "Another", [Role.desk], PASSWORD)
    for username, roles, password in (("Lan Anh", [Role.desk], PASSWORD), ("an", [], PASSWORD),
                                      ("an", [Role.desk], "short")):
        with pytest.raises(InvalidRequest):
            ident.add_user(username, "x", roles, password)
    ident.set_password("lan", "mat-khau-moi-dai")
    with pytest.raises(Forbidden):
        ident.authenticate("lan", PASSWORD)
    assert ident.authenticate("lan", "mat-khau-moi-dai").username == "lan"
    ident.set_active("lan", False)
    with pytest.raises(Forbidden):
        ident.authenticate("lan", "mat-khau-moi-dai")
    with pytest.raises(Forbidden):
        ident.active_user("lan")
    ident.set_active("lan", True)
    assert ident.set_roles("lan", [Role.approver]).roles == [Role.approver]
    nopass = ident.add_user("batch.bot", "Bot", [Role.clerk], None)
    with pytest.raises(Forbidden):  # no password: tokens only
        ident.authenticate(nopass.username, "")
    assert [u.username for u in ident.users()] == ["batch.bot", "lan"]
    assert "mat-khau" not in table_text(registry)


def test_tokens_act_in_one_role_and_are_kept_only_as_hashes(ident: Identity, registry: Registry) -> None:
    ident.add_user("hung", "Lê Hùng", [Role.approver, Role.specialist], PASSWORD)
    token, record = ident.issue_token("hung", Role.approver, label="web")
    assert token.startswith("hoso_") and len(token) > 40 and record.scope == Role.approver
    user, scope = ident.authenticate_token(token)
    assert (user.username, scope) == ("hung", Role.approver)
    assert ident.tokens("hung")[0].last_used_at is not None
    assert token not in table_text(registry) and hashlib.sha256(token.encode()).hexdigest() in table_text(registry)
    with pytest.raises(Forbidden):  # a role the user does not hold
        ident.issue_token("hung", Role.clerk)
    for wrong in (token + "x", "hoso_", "Bearer " + token, ""):
        with pytest.raises(Forbidden):
            ident.authenticate_token(wrong)
    # the user loses the role, is locked, the token expires or is revoked: it stops working
    ident.set_roles("hung", [Role.specialist])
    with pytest.raises(Forbidden):
        ident.authenticate_token(token)
    ident.set_roles("hung", [Role.approver])
    ident.set_active("hung", False)
    with pytest.raises(Forbidden):
        ident.authenticate_token(token)
    ident.set_active("hung", True)
    short, _ = ident.issue_token("hung", Role.approver, expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert ident.authenticate_token(short)[1] == Role.approver
    with pytest.raises(Forbidden):
        ident.authenticate_token(short, now=datetime.now(UTC) + timedelta(hours=2))
    ident.revoke_token(record.id)
    with pytest.raises(Forbidden):
        ident.authenticate_token(token)
    assert ident.tokens("hung")[0].revoked_at is not None


def test_lookup_secrets_are_checked_against_hashes_per_dossier(ident: Identity, registry: Registry) -> None:
    a, b = dossier(registry, "a"), dossier(registry, "b")
    secret = new_lookup_secret()
    assert 8 <= len(secret) <= 32 and new_lookup_secret() != secret
    with registry.transaction() as session:
        Identity.record_lookup_secret(session, a, secret, "form-01-1", RECEIVED)
    assert ident.check_lookup_secret(a, secret)
    wrong = secret[:-1] + ("y" if secret.endswith("x") else "x")  # (a secret may end in "x": 1 in 64, seen in CI)
    assert not ident.check_lookup_secret(b, secret) and not ident.check_lookup_secret(a, wrong)
    assert secret not in table_text(registry)


def test_one_claim_at_a_time_and_a_stale_one_is_taken_over(ident: Identity, registry: Registry) -> None:
    code = dossier(registry)
    ttl = timedelta(minutes=5)
    claim = ident.claim(code, "approve", "hung", check=lambda row: None, ttl=ttl)
    with pytest.raises(DossierBusy) as err:
        ident.claim(code, "seal", "thu", check=lambda row: None, ttl=ttl)
    assert "approve" in str(err.value) and "hung" in err.value.message_vi

    def wrong_state(row: Any) -> None:
        raise InvalidState("no")

    assert ident.release(claim) and not ident.release(claim) and not ident.holds(claim)
    with pytest.raises(InvalidState):  # the check refuses: nothing is claimed
        ident.claim(code, "seal", "thu", check=wrong_state, ttl=ttl)
    later = datetime.now(UTC) + ttl + timedelta(seconds=1)
    first = ident.claim(code, "approve", "hung", check=lambda row: None, ttl=ttl)
    second = ident.claim(code, "approve", "minh", check=lambda row: None, ttl=ttl, now=later)  # first went stale
    assert ident.holds(second) and not ident.holds(first)
    # the stale holder's transition is refused; the new holder's goes ahead and ends the claim
    with pytest.raises(DossierBusy, match="lost"):
        registry.transition(code, DossierState.appraisal, actor="hung", action="forward",
                            guard=Identity.guard(first, end=True), allowed_from={DossierState.received})
    with pytest.raises(DossierBusy):  # nor can anyone move it without the claim
        registry.transition(code, DossierState.appraisal, actor="lan", action="forward",
                            guard=Identity.guard(None, end=False), allowed_from={DossierState.received})
    moved = registry.transition(code, DossierState.appraisal, actor="minh", action="forward",
                                guard=Identity.guard(second, end=True), allowed_from={DossierState.received})
    assert moved.state == DossierState.appraisal and not ident.holds(second)
    registry.transition(code, DossierState.appraisal, actor="x", action="note", allowed_from={DossierState.appraisal},
                        guard=Identity.guard(None, end=False))  # free again


def test_concurrent_claims_let_exactly_one_through(ident: Identity, registry: Registry) -> None:
    code = dossier(registry)
    won: list[str] = []
    busy: list[str] = []
    barrier = threading.Barrier(6)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            ident.claim(code, "seal", f"w{i}", check=lambda row: None, ttl=timedelta(minutes=1))
            won.append(f"w{i}")
        except DossierBusy:
            busy.append(f"w{i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1 and len(busy) == 5
