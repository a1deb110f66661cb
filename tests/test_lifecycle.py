"""The lifecycle's steps as use cases, on the real registry (SQLite and PostgreSQL), store and signatures."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from support.lifecycle import (
    APPROVER,
    CLERK,
    DESK,
    PAYMENT,
    ROUTE,
    SPECIALIST,
    actor,
    dossier_in,
    hand_over,
    receive,
    take,
)
from support.pdfs import decode_qr, flat_text, stream_bytes
from test_signing import flattened_text

from pipeline.core.errors import DossierBusy, Forbidden, InvalidRequest, InvalidState, SigningFailed, StorageFailed
from pipeline.core.models import DossierState, Role
from pipeline.core.settings import Settings
from pipeline.domain.deadlines import due_date
from pipeline.domain.forms import LookupLink
from pipeline.domain.lifecycle import Actor, Delivery, load_lifecycle
from pipeline.domain.printing import clock_vi
from pipeline.domain.stats import compute_stats
from pipeline.usecases import clerk
from pipeline.usecases import lifecycle as lc
from pipeline.usecases.services import Services
from signing.verify import verify_pdf
from storage import keys
from storage.identity import Identity
from storage.objects import sha256_bytes

S = DossierState
TZ = "Asia/Ho_Chi_Minh"
VN = ZoneInfo(TZ)
PUBLIC = "https://dichvucong.example.vn"
T0 = datetime(2025, 7, 1, 9, 0, tzinfo=VN)  # a Tuesday


@pytest.fixture
def services(tmp_path: Path, registry_url: str) -> Iterator[Services]:
    s = Services(Settings(data_dir=tmp_path / "var", database_url=registry_url, public_url=PUBLIC, timezone=TZ))
    yield s
    s.registry.close()


def last(record: Any) -> Any:
    return record.events[-1]


def stored_and_recorded_agree(services: Services, code: str) -> None:
    """Every artifact of the dossier is in the store with the SHA-256 the registry recorded."""
    for name, art in services.registry.get(code).artifacts.items():
        assert sha256_bytes(services.store.get_bytes(art.object_key)) == art.sha256, name


def every_stored_byte(services: Services) -> bytes:
    return b"\n".join(stream_bytes(services.store.get_bytes(i.key)) if i.key.endswith(".pdf")
                      else services.store.get_bytes(i.key) for i in services.store.list())


def every_row(services: Services) -> str:
    engine = services.registry.engine
    with engine.connect() as conn:
        return "\n".join(repr(tuple(row)) for table in sa.inspect(conn).get_table_names()
                         for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')))


@pytest.mark.slow  # every step × role × state: ~60 s; the walk through every step below is fast
def test_each_step_by_each_role_from_each_state(services: Services) -> None:
    """Every step: each role it allows takes it from each state it starts from (the event says who, in which
    role, from → to); every other role is Forbidden, every other state InvalidState, and neither changes
    anything."""
    life = load_lifecycle()
    reference = {state: dossier_in(services, state, T0) for state in ROUTE}  # refusals leave these as they are
    before = {code: services.registry.get(code) for code in reference.values()}
    steps = [t for t in life.transitions.values() if t.name != "receive"]
    for t in steps:
        for source in (s for s in t.sources if s != S.receiving):
            for role in Role:
                if role not in t.roles:
                    with pytest.raises(Forbidden):
                        take(services, t.name, reference[source], actor("x", *(set(Role) - set(t.roles))))
                    with pytest.raises(Forbidden):
                        take(services, t.name, reference[source], actor("x", role))
            allowed = t.roles if source == t.sources[-1] else t.roles[:1]
            for role in allowed:
                code = dossier_in(services, source, T0)
                who = actor(f"user.{role.value}", role)
                out = take(services, t.name, code, who)
                ev = last(out.record)
                target = S.received if t.name == "supplemented" else (t.to[0] if t.to else source)
                assert (ev.action, ev.actor, ev.role, ev.from_state, ev.to_state) == (
                    t.name, who.username, role, source, target), t.name
                assert out.record.state == target
                if t.form is not None:
                    (form,) = out.forms
                    assert form.kind == t.form and form.artifact in out.record.artifacts
                    assert ev.detail["forms"][0]["sha256"] == out.record.artifacts[form.artifact].sha256
                stored_and_recorded_agree(services, code)
        for state, code in reference.items():
            if state not in t.sources:
                with pytest.raises(InvalidState):
                    take(services, t.name, code, actor("x", *t.roles))
    assert {code: services.registry.get(code) for code in reference.values()} == before


def test_a_dossier_through_every_step_leaves_its_audit_trail_forms_and_lookup(services: Services) -> None:
    ident = Identity(services.registry)
    for who in (DESK, SPECIALIST, APPROVER, CLERK):
        ident.add_user(who.username, f"Cán bộ {who.display_name}", who.roles, None)
    desk, specialist, approver, clerk_ = (lc.actor_for(services, n) for n in ("lan", "minh", "hung", "thu"))
    code, receipt_form = receive(services, T0, desk=desk)
    at = [T0 + timedelta(hours=h) for h in range(1, 12)]
    take(services, "request_supplement", code, desk, now=at[0])
    take(services, "supplemented", code, desk, now=at[1])
    take(services, "forward", code, desk, now=at[2])
    lc.request_supplement(services, code, specialist, reasons=["Cần bản sao có chứng thực"], now=at[3])
    back = take(services, "supplemented", code, desk, now=at[4])
    assert back.record.state == S.appraisal  # the specialist asked: the supplement goes back to appraisal
    take(services, "appraise", code, specialist, now=at[5])
    take(services, "approve", code, approver, now=at[6])
    sealed = take(services, "seal", code, clerk_, now=at[7])
    done = lc.return_result(services, code, desk, delivery=Delivery(channel="post", tracking_number="EMS0012345VN"),
                            payment=PAYMENT, now=at[8])
    record = done.record
    assert [(e.action, e.actor, e.role, e.from_state, e.to_state) for e in record.events] == [
        ("reserve", "lan", None, None, S.receiving),
        ("intake", "lan", None, S.receiving, S.received),
        ("intake_forms", "lan", Role.desk, S.received, S.received),
        ("request_supplement", "lan", Role.desk, S.received, S.needs_supplement),
        ("supplemented", "lan", Role.desk, S.needs_supplement, S.received),
        ("forward", "lan", Role.desk, S.received, S.appraisal),
        ("request_supplement", "minh", Role.specialist, S.appraisal, S.needs_supplement),
        ("supplemented", "lan", Role.desk, S.needs_supplement, S.appraisal),
        ("appraise", "minh", Role.specialist, S.appraisal, S.approval),
        ("approve", "hung", Role.approver, S.approval, S.sealing),
        ("seal", "thu", Role.clerk, S.sealing, S.result_ready),
        ("pay", "lan", Role.desk, S.result_ready, S.result_ready),
        ("return", "lan", Role.desk, S.result_ready, S.returned),
    ]
    assert [e.at for e in record.events[3:]] == [*at[:8], at[8], at[8]]
    assert record.events[8].note == "Hồ sơ đủ điều kiện"
    assert record.events[-2].detail == {"payment": {"method": "bank_transfer", "reference": "FT25195000123"}}
    assert record.events[-1].detail["delivery"] == {"channel": "post", "tracking_number": "EMS0012345VN"}
    assert record.returned_at == at[8]
    # the forms of each step, stored with the dossier, agreeing with the registry
    assert sorted(n for n in record.artifacts if n.startswith("form-")) == [
        "form-01-1", "form-01-2", "form-02-1", "form-02-2", "form-06-1", "form-06-2"]  # 01-2: after the supplement
    assert record.artifacts["form-06-2"].object_key == keys.form_key(code, "06", "kiem-soat", 2)
    stored_and_recorded_agree(services, code)
    slip = flat_text(services.store.get_bytes(record.artifacts["form-06-2"].object_key))
    for expected in ("Cán bộ Lan", "Cán bộ Minh", "Cán bộ Hung", "Cán bộ Thu", "Thẩm định", "Đóng dấu, phát hành",
                     "Trả kết quả", "Quá hạn"):  # two requests to supplement: late by Decision 766
        assert expected in slip, expected
    # the e-result: the leader's signature, then the seal; its code where the registry and store say
    result = services.store.get_bytes(record.artifacts[keys.RESULT].object_key)
    report = verify_pdf(result, [services.pki.root_cert], identities=services.signer_identities)
    assert report.ok and [s.role for s in report.signatures] == ["approver", "seal"], report
    code_ = sealed.result.verification_code  # type: ignore[union-attr]
    assert f"Mã tra cứu: {code_}" in flat_text(result)
    assert services.store.stat(record.artifacts[keys.RESULT].object_key).metadata["verification-code"] == code_
    assert result.startswith(services.store.get_bytes(record.artifacts[keys.RESULT_APPROVED].object_key))
    # the citizen's copy has its own secret, which looks the dossier up; it is stored nowhere
    assert receipt_form is not None and receipt_form.citizen_pdf is not None
    secret = LookupLink.parse(receipt_form.lookup_url or "", PUBLIC).secret.get_secret_value()  # type: ignore[union-attr]
    assert LookupLink.parse(decode_qr(receipt_form.citizen_pdf)[0], PUBLIC).secret.get_secret_value() == secret  # type: ignore[union-attr]
    status = lc.citizen_lookup(services, code, secret)
    assert (status.state, status.state_label, status.returned_at) == (S.returned, "Đã trả kết quả", at[8])
    for wrong in ("", secret[:-1] + ("A" if secret[-1] != "A" else "B")):
        with pytest.raises(Forbidden):
            lc.citizen_lookup(services, code, wrong)
    with pytest.raises(Forbidden):
        lc.citizen_lookup(services, "000.00.00.H00-250701-9999", secret)
    assert secret.encode() not in every_stored_byte(services) and secret not in every_row(services)


def test_supplement_requests_carry_their_own_secrets(services: Services) -> None:
    code, _ = receive(services, T0, status="needs_supplement")
    stored = services.store.get_bytes(services.registry.get(code).artifacts["form-02-1"].object_key)
    assert "Thiếu giấy đề nghị đăng ký hộ kinh doanh" in flat_text(stored)
    first = take(services, "supplemented", code, DESK).record
    assert first.state == S.received  # asked at intake: back to the desk
    again = take(services, "request_supplement", code, DESK)
    (form,) = again.forms
    assert form.artifact == "form-02-2" and form.citizen_pdf is not None and form.lookup_url
    secret = LookupLink.parse(form.lookup_url, PUBLIC).secret.get_secret_value()  # type: ignore[union-attr]
    assert lc.citizen_lookup(services, code, secret).state == S.needs_supplement
    assert "CCCD" in flat_text(form.citizen_pdf) or "Căn cước" in flat_text(form.citizen_pdf)
    assert secret.encode() not in stream_bytes(services.store.get_bytes(form.object_key))


def test_a_supplement_at_intake_reissues_the_receipt_with_a_new_appointment(services: Services) -> None:
    """Asked to supplement at intake, complete a week later: a new Mẫu 01 whose appointment counts the
    procedure's working days from the supplement, signed, stored, with its own lookup secret; the due lists
    and the citizen's lookup use it. A supplement the specialist asked for issues no receipt."""
    code, _ = receive(services, T0, status="needs_supplement")
    first_due = services.registry.get(code).due_at
    t1 = datetime(2025, 7, 8, 10, 30, tzinfo=VN)  # Tuesday of the next week
    outcome = take(services, "supplemented", code, DESK, now=t1)
    days = services.catalog.procedure(outcome.record.procedure).processing_days
    new_due = due_date(t1, days, TZ)
    assert outcome.record.state == S.received and new_due > first_due
    (form,) = outcome.forms
    assert (form.kind, form.artifact) == ("receipt", "form-01-1") and form.citizen_pdf and form.lookup_url
    record = services.registry.get(code)
    assert record.artifacts["form-01-1"].object_key == form.object_key
    event = last(record)
    assert (event.action, event.actor, event.role) == ("supplemented", "lan", Role.desk)
    assert datetime.fromisoformat(event.detail["new_due_at"]) == new_due
    assert datetime.fromisoformat(event.detail["previous_due_at"]) == first_due
    assert lc.appointment(record) == new_due and record.due_at == first_due  # 766 counts from the first receipt
    stored = services.store.get_bytes(form.object_key)
    text = flat_text(stored)
    assert clock_vi(new_due) in text and clock_vi(t1) in text and code in text
    report = verify_pdf(stored, [services.pki.root_cert], identities=services.signer_identities)
    assert report.ok and [s.role for s in report.signatures] == ["officer"], report
    secret = LookupLink.parse(form.lookup_url, PUBLIC).secret.get_secret_value()  # type: ignore[union-attr]
    assert lc.citizen_lookup(services, code, secret).appointment == new_due
    assert secret.encode() not in stream_bytes(stored)
    # from appraisal: back to the specialist, the appointment unchanged, no receipt
    take(services, "forward", code, DESK, now=t1 + timedelta(hours=1))
    lc.request_supplement(services, code, SPECIALIST, reasons=["Cần bản sao có chứng thực"],
                          now=t1 + timedelta(hours=2))
    back = take(services, "supplemented", code, DESK, now=t1 + timedelta(days=1))
    assert back.record.state == S.appraisal and back.forms == [] and lc.appointment(back.record) == new_due


def test_the_desk_form_is_issued_once(services: Services) -> None:
    code, form = receive(services, T0)
    assert form is not None and form.artifact == "form-01-1"
    record = services.registry.get(code)
    from pipeline.core.models import Receipt

    receipt = Receipt.model_validate(record.receipt_json)
    assert lc.issue_intake_forms(services, receipt, DESK) is None  # a second run issues nothing
    assert [e.action for e in services.registry.get(code).events].count("intake_forms") == 1
    with pytest.raises(Forbidden):  # only the desk receives
        lc.issue_intake_forms(services, receipt, SPECIALIST)


@pytest.mark.slow
def test_a_fee_that_applies_must_be_paid_before_the_result_is_returned(services: Services) -> None:
    code = dossier_in(services, S.result_ready, T0, procedure="certified_copy")  # a verified fee
    with pytest.raises(InvalidRequest) as err:
        take(services, "return", code, DESK)
    assert err.value.exit_code == 2 and "mã thanh toán" in err.value.message_vi
    record = services.registry.get(code)
    assert record.state == S.result_ready and "form-06-2" not in record.artifacts
    assert not [i for i in services.store.list(keys.dossier_prefix(code)) if "06-kiem-soat-2" in i.key]
    take(services, "pay", code, CLERK)
    out = take(services, "return", code, CLERK)
    assert out.record.state == S.returned and out.role == Role.clerk
    # the batch path asks for it before it signs anything
    other = dossier_in(services, S.received, T0, procedure="certified_copy")
    with pytest.raises(InvalidRequest):
        clerk.issue_result(other, services)
    assert services.registry.get(other).state == S.received
    assert not any("result" in i.key for i in services.store.list(keys.dossier_prefix(other)))
    issued = clerk.issue_result(other, services, payment=PAYMENT)
    assert services.registry.get(other).state == S.returned and issued.verification_code


@pytest.mark.slow
def test_issue_result_takes_the_remaining_steps_as_the_batch(services: Services) -> None:
    code = dossier_in(services, S.approval, T0)
    issued = clerk.issue_result(code, services)
    record = services.registry.get(code)
    batch = [e for e in record.events if e.actor == "batch:issue-result"]
    assert [(e.action, e.role, e.to_state) for e in batch] == [
        ("approve", Role.approver, S.sealing), ("seal", Role.clerk, S.result_ready), ("return", Role.desk, S.returned)]
    assert all(e.detail and e.detail["batch"] == "issue-result" for e in batch)
    assert record.artifacts[keys.RESULT].object_key == issued.object_key == keys.result_key(code)
    assert sha256_bytes(issued.pdf) == record.artifacts[keys.RESULT].sha256
    with pytest.raises(InvalidState) as err:
        clerk.issue_result(code, services)
    assert "đã được trả kết quả" in err.value.message_vi
    for state in (S.needs_supplement, S.stopped):
        with pytest.raises(InvalidState):
            clerk.issue_result(dossier_in(services, state, T0), services)
    # from result_ready only the return is left: the stored result is handed back
    ready = dossier_in(services, S.result_ready, T0)
    again = clerk.issue_result(ready, services)
    assert again.pdf == services.store.get_bytes(keys.result_key(ready))


def test_a_dossier_handed_over_with_its_result_decided_is_released_on_paper_and_returned(services: Services) -> None:
    """Handed over in sealing or result_ready, the old unit's paper result (no e-result in hoso): the clerk seals
    and releases the paper, the desk returns it at the counter or by post, never online; issue-result says why it
    cannot issue an e-result instead of failing."""
    sealing = hand_over(services, S.sealing, T0 - timedelta(days=40))
    released = clerk.seal(services, sealing, CLERK, now=T0)
    assert released.result is None and released.record.state == S.result_ready
    assert keys.RESULT not in released.record.artifacts and keys.RESULT_APPROVED not in released.record.artifacts
    assert (last(released.record).action, last(released.record).detail["result"]) == (
        "seal", {"medium": "paper", "approved_by": "000.21.00.H56"})
    with pytest.raises(InvalidRequest) as online:
        lc.return_result(services, sealing, DESK, delivery=Delivery(channel="online"), now=T0)
    assert "kết quả giấy" in online.value.message_vi and services.registry.get(sealing).state == S.result_ready
    returned = lc.return_result(services, sealing, DESK, delivery=Delivery(channel="counter"), now=T0)
    assert returned.record.state == S.returned and [f.kind for f in returned.forms] == ["control"]
    slip = "".join(flat_text(services.store.get_bytes(returned.forms[0].object_key)).split())  # cells wrap
    assert "Nhậnbàngiaohồsơtừđơnvịcũ(000.21.00.H56)" in slip  # the trail here starts with the hand-over

    ready = hand_over(services, S.result_ready, T0 - timedelta(days=40))
    with pytest.raises(InvalidState) as batch:
        clerk.issue_result(ready, services)
    assert "kết quả giấy" in batch.value.message_vi
    post = Delivery(channel="post", tracking_number="EB123456789VN")
    by_post = lc.return_result(services, ready, CLERK, delivery=post, now=T0)
    assert by_post.record.state == S.returned

    # Handed over before the approval: the leader approves here, and the result is an e-result as usual.
    approval = hand_over(services, S.approval, T0 - timedelta(days=40))
    take(services, "approve", approval, APPROVER, now=T0)
    sealed = clerk.seal(services, approval, CLERK, now=T0)
    assert sealed.result is not None and keys.RESULT in sealed.record.artifacts
    assert not lc.paper_result(sealed.record)


@pytest.mark.slow
def test_a_step_in_progress_holds_the_dossier(services: Services) -> None:
    code = dossier_in(services, S.approval, T0)
    ident = Identity(services.registry)
    held = ident.claim(code, "approve", "someone", check=lambda row: None, ttl=lc.CLAIM_TTL)
    for name, who in (("approve", APPROVER), ("withdraw", DESK), ("pay", CLERK)):
        with pytest.raises(DossierBusy) as err:
            take(services, name, code, who)
        assert err.value.exit_code == 15 and "đang được xử lý" in err.value.message_vi
    with pytest.raises(DossierBusy):
        clerk.issue_result(code, services)
    ident.release(held)
    assert take(services, "approve", code, APPROVER).record.state == S.sealing


@pytest.mark.slow
def test_a_failed_step_leaves_the_dossier_and_the_store_as_they_were(services: Services,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    code = dossier_in(services, S.approval, T0)
    objects = sorted(i.key for i in services.store.list())
    events = len(services.registry.get(code).events)

    class NoApprover:
        def signer(self, role: str) -> Any:
            raise SigningFailed(f"no key for {role}")

    good = services.keys
    services.__dict__["keys"] = NoApprover()
    with pytest.raises(SigningFailed):
        take(services, "approve", code, APPROVER)
    services.__dict__["keys"] = good
    real = services.registry.transition

    def fails(*args: Any, **kw: Any) -> Any:
        raise StorageFailed("registry down")

    monkeypatch.setattr(services.registry, "transition", fails)
    with pytest.raises(StorageFailed):  # signed and written, then the registry fails: the objects go
        take(services, "approve", code, APPROVER)
    monkeypatch.setattr(services.registry, "transition", real)
    assert sorted(i.key for i in services.store.list()) == objects
    record = services.registry.get(code)
    assert record.state == S.approval and len(record.events) == events
    assert take(services, "approve", code, APPROVER).record.state == S.sealing  # nothing left held


@pytest.mark.slow
def test_an_apology_gives_a_new_appointment_by_working_days(services: Services) -> None:
    # received Fri 25/04/2025 09:00 (3 working days: Sat 26/04 is a make-up working day) → due Tue 29/04 17:00
    received = datetime(2025, 4, 25, 9, 0, tzinfo=VN)
    code = dossier_in(services, S.appraisal, received)
    due = services.registry.get(code).due_at
    assert due == datetime(2025, 4, 29, 17, 0, tzinfo=VN)
    early = datetime(2025, 4, 25, 10, 0, tzinfo=VN)
    with pytest.raises(InvalidState) as err:
        lc.extend(services, code, APPROVER, working_days=2, reason="Cần xác minh", now=early)
    assert "chưa đến hạn" in err.value.message_vi
    # Mon 28/04: due within one working day. 30/04, 01/05, 02/05 are off: 2 working days → Tue 06/05
    monday = datetime(2025, 4, 28, 15, 0, tzinfo=VN)
    out = lc.extend(services, code, APPROVER, working_days=2, reason="Cần xác minh tại địa phương", now=monday)
    ev = last(out.record)
    assert (ev.action, ev.role, ev.from_state, ev.to_state) == ("extend", Role.approver, S.appraisal, S.appraisal)
    assert ev.detail["new_due_at"] == datetime(2025, 5, 6, 17, 0, tzinfo=VN).isoformat()
    assert lc.appointment(out.record) == datetime(2025, 5, 6, 17, 0, tzinfo=VN)
    assert out.record.due_at == due  # Decision 766 measures against the first appointment
    (form,) = out.forms
    text = flat_text(services.store.get_bytes(form.object_key))
    assert form.kind == "apology" and "ngày 06 tháng 05 năm 2025" in text and "ngày 29 tháng 04 năm 2025" in text
    with pytest.raises(Forbidden):
        lc.extend(services, code, DESK, working_days=1, reason="x", now=monday)
    with pytest.raises(InvalidRequest):
        lc.extend(services, code, APPROVER, working_days=0, reason="x", now=monday)
    # the work lists use the new appointment
    tuesday = datetime(2025, 4, 29, 18, 0, tzinfo=VN)
    assert code not in [i.code for i in lc.overdue(services, now=tuesday)]
    assert code in [i.code for i in lc.overdue(services, now=datetime(2025, 5, 6, 17, 1, tzinfo=VN))]


@pytest.mark.slow
def test_work_lists_follow_the_working_day_clock(services: Services) -> None:
    # due dates (3 working days; Sat 26/04/2025 is a make-up working day, 30/04–02/05 are off):
    # received Wed 23/04 → Sat 26/04; Thu 24/04 → Mon 28/04; Fri 25/04 → Tue 29/04; Mon 28/04 → Tue 06/05
    codes = {
        "overdue": dossier_in(services, S.appraisal, datetime(2025, 4, 23, 9, 0, tzinfo=VN)),
        "yesterday": dossier_in(services, S.approval, datetime(2025, 4, 24, 9, 0, tzinfo=VN)),
        "ready": dossier_in(services, S.result_ready, datetime(2025, 4, 23, 10, 0, tzinfo=VN)),
        "citizen": dossier_in(services, S.needs_supplement, datetime(2025, 4, 23, 11, 0, tzinfo=VN)),
        "later": dossier_in(services, S.received, datetime(2025, 4, 28, 9, 0, tzinfo=VN)),
        "sealing": dossier_in(services, S.sealing, datetime(2025, 4, 25, 9, 0, tzinfo=VN)),
        "done": dossier_in(services, S.returned, datetime(2025, 4, 22, 9, 0, tzinfo=VN)),
    }
    assert services.registry.get(codes["later"]).due_at == datetime(2025, 5, 6, 17, 0, tzinfo=VN)
    tuesday = datetime(2025, 4, 29, 9, 0, tzinfo=VN)
    # Tuesday 29/04: due within one working day runs to Mon 05/05 17:00 (three days off and a weekend),
    # so the dossier due Tue 06/05 is not in it yet; waiting on the citizen or done: in neither list
    assert [i.code for i in lc.due_soon(services, now=tuesday)] == [codes["sealing"]]
    assert [i.code for i in lc.overdue(services, now=tuesday)] == [codes["overdue"], codes["yesterday"]]
    # Monday 05/05: the dossier due Tue 06/05 is due soon; the others are overdue, oldest appointment first
    monday = datetime(2025, 5, 5, 9, 0, tzinfo=VN)
    assert [i.code for i in lc.due_soon(services, now=monday)] == [codes["later"]]
    assert [i.code for i in lc.overdue(services, now=monday)] == [
        codes["overdue"], codes["yesterday"], codes["sealing"]]
    assert all(i.overdue for i in lc.overdue(services, now=monday))
    assert {i.code for i in lc.worklist(services, Role.desk, now=tuesday)} == {
        codes["ready"], codes["citizen"], codes["later"]}
    assert [i.code for i in lc.worklist(services, Role.specialist)] == [codes["overdue"]]
    assert [i.code for i in lc.worklist(services, Role.approver)] == [codes["yesterday"]]
    assert [(i.code, i.state_label) for i in lc.worklist(services, Role.clerk)] == [
        (codes["sealing"], "Chờ văn thư đóng dấu, phát hành")]
    assert lc.worklist(services, Role.admin) == []


@pytest.mark.slow
def test_decision_766_over_dossiers_the_steps_made(services: Services) -> None:
    """Steps that leave the state as it is (the desk's form, a payment, an apology) are neither a second
    request to supplement nor an end; the result being ready ends the dossier."""
    asked, _ = receive(services, T0, status="needs_supplement")  # Mẫu 02 at intake: one request
    for hours, (name, who) in enumerate([("supplemented", DESK), *ROUTE[S.result_ready]], start=1):
        take(services, name, asked, who, now=T0 + timedelta(hours=hours))
    requests = [e for e in services.registry.get(asked).events if e.to_state == S.needs_supplement]
    assert [e.action for e in requests] == ["intake", "intake_forms"]
    ready = dossier_in(services, S.result_ready, T0)
    take(services, "pay", ready, DESK, now=T0 + timedelta(hours=1))
    late = dossier_in(services, S.appraisal, T0)  # due Fri 04/07 17:00
    lc.extend(services, late, APPROVER, working_days=3, reason="Cần xác minh",
              now=datetime(2025, 7, 4, 10, 0, tzinfo=VN))
    stats = compute_stats(services.registry, date(2025, 7, 1), date(2025, 7, 31), tz=TZ,
                          now=datetime(2025, 8, 1, 9, 0, tzinfo=VN))
    assert (stats.received, stats.completed, stats.e_results) == (3, 2, 2)
    assert (stats.early, stats.on_time, stats.late, stats.open) == (2, 0, 1, 1)


@pytest.mark.slow
def test_users_from_password_and_token_act_in_their_roles(services: Services) -> None:
    ident = Identity(services.registry)
    ident.add_user("hung", "Lê Văn Hùng", [Role.approver, Role.specialist], "mat-khau-rat-dai")
    token, _ = ident.issue_token("hung", Role.specialist)
    assert lc.login(services, "hung", "mat-khau-rat-dai").roles == {Role.approver, Role.specialist}
    by_token = lc.actor_for_token(services, token)
    assert by_token.roles == {Role.specialist} and by_token.display_name == "Lê Văn Hùng"
    code = dossier_in(services, S.approval, T0)
    with pytest.raises(Forbidden):  # the token acts as specialist only
        take(services, "approve", code, by_token)
    out = take(services, "approve", code, lc.actor_for(services, "hung"))
    approved = services.store.get_bytes(out.record.artifacts[keys.RESULT_APPROVED].object_key)
    assert "Ký bởi: Lê Văn Hùng" in flattened_text(approved)  # the leader's own name in the stamp
    ident.set_active("hung", False)
    for resolve in (lambda: lc.actor_for(services, "hung"), lambda: lc.actor_for_token(services, token),
                    lambda: lc.login(services, "hung", "mat-khau-rat-dai")):
        with pytest.raises(Forbidden):
            resolve()
    with pytest.raises(Forbidden):
        lc.actor_for(services, "nobody")


def test_only_an_admin_manages_users_and_a_user_their_own_password(services: Services) -> None:
    admin = actor("root", Role.admin)
    lan = lc.add_user(services, admin, "lan", "Nguyễn Thị Lan", [Role.desk], "mat-khau-rat-dai")
    assert lan.roles == [Role.desk]
    for by in (DESK, APPROVER, Actor.for_batch("issue-result")):
        with pytest.raises(Forbidden):
            lc.add_user(services, by, "minh", "Minh", [Role.specialist], "mat-khau-rat-dai")
        with pytest.raises(Forbidden):
            lc.set_active(services, by, "lan", False)
    with pytest.raises(Forbidden):
        lc.change_password(services, APPROVER, "lan", "mat-khau-khac-dai")
    lc.change_password(services, DESK, "lan", "mat-khau-cua-lan")  # DESK is "lan" herself
    assert lc.login(services, "lan", "mat-khau-cua-lan").username == "lan"
    token, record = lc.issue_token(services, DESK, "lan", Role.desk)
    assert lc.actor_for_token(services, token).roles == {Role.desk}
    with pytest.raises(Forbidden):
        lc.issue_token(services, CLERK, "lan", Role.desk)
    lc.set_active(services, admin, "lan", False)
    with pytest.raises(Forbidden):
        lc.actor_for_token(services, token)
    assert record.scope == Role.desk
