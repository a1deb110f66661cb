"""The lifecycle file (pipeline/data/lifecycle.yaml) and what the domain answers from it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from pipeline.core.errors import ConfigurationError, ExitCode, Forbidden, InvalidState
from pipeline.core.models import DossierState, Role
from pipeline.domain.catalog import load_catalog
from pipeline.domain.lifecycle import (
    Actor,
    Delivery,
    Payment,
    due_soon_until,
    load_lifecycle,
    load_lifecycle_file,
    payment_required,
)

S = DossierState
VN = ZoneInfo("Asia/Ho_Chi_Minh")
DATA = Path(__file__).resolve().parents[1] / "pipeline" / "data" / "lifecycle.yaml"


def actor(*roles: Role) -> Actor:
    return Actor(username="u", display_name="Nguyễn Văn U", roles=frozenset(roles))


def test_every_state_and_role_is_described_in_vietnamese() -> None:
    lc = load_lifecycle()
    assert set(lc.states) == set(DossierState) and set(lc.roles) == set(Role)
    assert lc.state_label(S.result_ready) == "Đã xử lý xong, chờ trả kết quả"
    assert all(spec.label for spec in lc.states.values()) and all(t.label for t in lc.transitions.values())
    # the registry's and `hoso stats`' state names are kept
    assert {"receiving", "received", "needs_supplement", "rejected", "returned"} <= {s.value for s in lc.states}


def test_the_shape_of_the_lifecycle() -> None:
    lc = load_lifecycle()
    assert lc.final_states == {S.rejected, S.returned, S.stopped, S.withdrawn}
    assert lc.open_states == {S.received, S.needs_supplement, S.appraisal, S.approval, S.sealing, S.result_ready}
    assert [t.name for t in lc.path(S.received, S.returned)] == ["forward", "appraise", "approve", "seal", "return"]
    assert [t.name for t in lc.path(S.sealing, S.returned)] == ["seal", "return"]
    assert lc.path(S.returned, S.returned) == []
    with pytest.raises(InvalidState):  # waiting on the citizen: no batch goes round that
        lc.path(S.needs_supplement, S.returned)
    assert {t.name for t in lc.transitions.values() if t.ends} == {"refuse", "return", "stop", "withdraw"}
    assert {t.form for t in lc.transitions.values()} == {"receipt", "supplement", "refusal", "control", "apology",
                                                          "stop", None}
    assert [lc.intake(s).name for s in (S.received, S.needs_supplement, S.rejected)] == [
        "receive", "request_supplement", "refuse"]
    assert lc.awaiting(Role.specialist) == {S.appraisal} and lc.awaiting(Role.clerk) == {S.sealing}
    assert lc.awaiting(Role.desk) == {S.received, S.needs_supplement, S.result_ready}
    assert lc.awaiting(Role.admin) == set()


def test_authorize_names_the_role_taken_and_refuses_others_in_both_languages() -> None:
    lc = load_lifecycle()
    ret = lc.transition("return")
    assert lc.authorize(ret, actor(Role.clerk, Role.specialist)) == Role.clerk
    assert lc.authorize(ret, actor(Role.desk, Role.clerk)) == Role.desk  # the step's first role
    with pytest.raises(Forbidden) as err:
        lc.authorize(lc.transition("approve"), actor(Role.desk, Role.admin))
    assert "needs one of: approver" in str(err.value) and err.value.exit_code == ExitCode.forbidden
    assert "Phê duyệt, ký kết quả" in err.value.message_vi and "Lãnh đạo phê duyệt" in err.value.message_vi
    batch = Actor.for_batch("issue-result")
    assert all(lc.authorize(t, batch) in t.roles for t in lc.transitions.values())
    assert batch.username == "batch:issue-result" and batch.batch == "issue-result"


def test_check_state_refuses_a_step_from_the_wrong_state_and_any_step_from_a_reservation() -> None:
    lc = load_lifecycle()
    appraise = lc.transition("appraise")
    lc.check_state(appraise, "D-1", S.appraisal)
    with pytest.raises(InvalidState) as err:
        lc.check_state(appraise, "D-1", S.received)
    assert "'received'" in str(err.value) and "Đã tiếp nhận" in err.value.message_vi
    with pytest.raises(InvalidState):  # intake's steps start from `receiving`, but only the desk chain takes them
        lc.check_state(lc.transition("refuse"), "D-1", S.receiving)


def test_a_supplement_goes_back_to_where_it_was_asked_for() -> None:
    lc = load_lifecycle()
    t = lc.transition("supplemented")
    at_intake = [(None, S.receiving), (S.receiving, S.needs_supplement)]
    assert lc.target(t, S.needs_supplement, at_intake) == S.received
    at_desk = [(None, S.receiving), (S.receiving, S.received), (S.received, S.needs_supplement)]
    assert lc.target(t, S.needs_supplement, at_desk) == S.received
    in_appraisal = [*at_desk, (S.needs_supplement, S.received), (S.received, S.appraisal),
                    (S.appraisal, S.needs_supplement), (S.needs_supplement, S.needs_supplement)]
    assert lc.target(t, S.needs_supplement, in_appraisal) == S.appraisal
    assert lc.target(lc.transition("pay"), S.sealing, []) == S.sealing  # a step that stays


def _broken(tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load(DATA.read_text(encoding="utf-8"))
    change(raw)
    path = tmp_path / "lifecycle.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda r: r["states"].pop("sealing"), "state 'sealing' is not described"),
        (lambda r: r["roles"].pop("clerk"), "role 'clerk' has no label"),
        (lambda r: r["transitions"]["return"].pop("ends"), "nothing follows: mark it `ends`"),
        (lambda r: r["transitions"]["forward"].update(ends=True), "forward ends the dossier, but steps lead out"),
        (lambda r: r["transitions"]["refuse"].update({"from": ["needs_supplement"]}), "intake ending in 'rejected'"),
        (lambda r: r["transitions"]["forward"].update(to=["appraisal", "approval"]), "several targets"),
        (lambda r: r["transitions"]["seal"].update(result="approve"), "exactly one step must have result"),
        (lambda r: r["states"]["approval"].update(awaits="specialist"), "awaits specialist, who has no step out"),
        (lambda r: r["transitions"]["appraise"].update(roles=["auditor"]), "roles"),
        (lambda r: r["transitions"]["stop"].update(form="memo"), "form"),
        (lambda r: r["transitions"]["appraise"].update(to="archived"), "to"),
    ],
)
def test_a_broken_lifecycle_file_is_refused_with_its_problem(tmp_path: Path, change, problem: str) -> None:  # type: ignore[no-untyped-def]
    assert load_lifecycle_file(DATA).transitions.keys() == load_lifecycle().transitions.keys()
    with pytest.raises(ConfigurationError) as err:
        load_lifecycle_file(_broken(tmp_path, change))
    assert problem in str(err.value)


def test_due_soon_runs_to_the_close_of_the_next_working_day() -> None:
    tz = "Asia/Ho_Chi_Minh"
    # Friday → Monday 17:00 (the weekend skipped)
    assert due_soon_until(datetime(2025, 7, 4, 10, 0, tzinfo=VN), tz) == datetime(2025, 7, 7, 17, 0, tzinfo=VN)
    # Saturday → Monday
    assert due_soon_until(datetime(2025, 7, 5, 10, 0, tzinfo=VN), tz) == datetime(2025, 7, 7, 17, 0, tzinfo=VN)
    # Tuesday 29/04/2025: 30/04, 01/05 and the swapped 02/05 are off, then the weekend → Monday 05/05
    assert due_soon_until(datetime(2025, 4, 29, 9, 0, tzinfo=VN), tz) == datetime(2025, 5, 5, 17, 0, tzinfo=VN)
    # 23:30 UTC on Thursday is already Friday in Hà Nội
    assert due_soon_until(datetime(2025, 7, 3, 23, 30, tzinfo=ZoneInfo("UTC")), tz) == datetime(
        2025, 7, 7, 17, 0, tzinfo=VN)


def test_payments_are_cashless_and_required_only_where_a_fee_certainly_applies() -> None:
    catalog = load_catalog()
    assert payment_required(catalog.procedure("certified_copy"))  # verified fee
    assert not payment_required(catalog.procedure("business_household_registration"))  # unverified amount
    free = [p for p in catalog.procedures.values() if p.fee is not None and p.fee.free]
    assert free and not any(payment_required(p) for p in free)
    assert Payment(method="gateway", reference="VNPAY-20250714-000123").reference
    for bad in ({"method": "cash", "reference": "R-0001"}, {"method": "bank_transfer", "reference": "ab"},
                {"method": "bank_transfer", "reference": "FT 25 195"}):
        with pytest.raises(ValueError):
            Payment.model_validate(bad)
    assert Delivery(channel="post", tracking_number="EMS123456789VN").channel == "post"
    for bad in ({"channel": "post"}, {"channel": "counter", "tracking_number": "EMS1234"}, {"channel": "fax"}):
        with pytest.raises(ValueError):
            Delivery.model_validate(bad)
