"""The dossier lifecycle as data: states, the steps between them, who may take each (domain.md §2.1).

``pipeline/data/lifecycle.yaml`` names the roles and states (with their Vietnamese labels) and the
transitions: the states each starts from and leads to, the roles allowed, the one-stop form it issues,
whether it ends the dossier. :func:`load_lifecycle` reads and checks it once per process; a
:class:`Lifecycle` then answers what a use case asks before it acts: may this user take this step
(:meth:`Lifecycle.authorize`, else :class:`~pipeline.core.errors.Forbidden`), from this state
(:meth:`Lifecycle.check_state`, else :class:`~pipeline.core.errors.InvalidState`), and where to
(:meth:`Lifecycle.target`). Work lists come from here too: the states awaiting each role, and the
working-day horizon of "due within one working day" (:func:`due_soon_until`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.core.errors import ConfigurationError, Forbidden, InvalidState
from pipeline.core.models import DossierState, Role
from pipeline.domain.catalog import Procedure
from pipeline.domain.deadlines import CLOSE, next_working_day
from pipeline.domain.forms import FormKind

__all__ = [
    "CHANNEL_VI",
    "Actor",
    "Delivery",
    "Lifecycle",
    "Payment",
    "StateSpec",
    "Transition",
    "due_soon_until",
    "load_lifecycle",
    "load_lifecycle_file",
    "payment_required",
]


class Actor(BaseModel):
    """Who takes a step: a named user with roles, or a batch command acting in each step's role."""

    model_config = ConfigDict(frozen=True)

    username: str = Field(min_length=1, max_length=128)
    display_name: str = Field(min_length=1, max_length=200)
    roles: frozenset[Role]
    batch: str | None = Field(None, description="The batch command acting (e.g. 'issue-result'); None: a person")

    @classmethod
    def for_batch(cls, command: str, username: str | None = None) -> Actor:
        """The actor of an unattended command (``hoso issue-result``, ``hoso ingest`` without ``--user``):
        it may take any step (but manage users), and the audit trail says which command took it
        (``detail.batch``)."""
        return cls(username=username or f"batch:{command}", display_name="Xử lý tự động",
                   roles=frozenset(Role) - {Role.admin}, batch=command)


class StateSpec(BaseModel):
    label: str = Field(min_length=1)
    label_en: str | None = None
    awaits: Role | None = Field(None, description="The role whose work list holds a dossier in this state")


class ActionSpec(BaseModel):
    """An action of the audit trail that is no step (lifecycle.yaml ``actions``)."""

    label: str = Field(min_length=1)
    label_en: str = Field(min_length=1)


class Transition(BaseModel):
    """One step of the lifecycle (see the comments of lifecycle.yaml)."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    label: str = Field(min_length=1)
    label_en: str | None = None
    sources: list[DossierState] = Field(alias="from", min_length=1)
    to: list[DossierState] = Field(default_factory=list, description="Empty: the dossier stays where it is")
    roles: list[Role] = Field(min_length=1)
    form: FormKind | None = None
    result: Literal["approve", "seal"] | None = None
    ends: bool = False
    note: Literal["required", "optional"] = "optional"
    payment: bool = False
    due_soon: bool = False

    @field_validator("to", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @property
    def stays(self) -> bool:
        return not self.to


class Lifecycle(BaseModel):
    """The validated lifecycle file."""

    roles: dict[Role, str]
    roles_en: dict[Role, str] = Field(default_factory=dict)
    states: dict[DossierState, StateSpec]
    transitions: dict[str, Transition]
    actions: dict[str, ActionSpec] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _named(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("transitions"), dict):
            raw = dict(raw)
            raw["transitions"] = {
                name: ({"name": name} | spec) if isinstance(spec, dict) else spec
                for name, spec in raw["transitions"].items()
            }
        return raw

    @model_validator(mode="after")
    def _coherent(self) -> Lifecycle:
        problems = [f"role {r.value!r} has no label" for r in Role if r not in self.roles]
        problems += [f"state {s.value!r} is not described" for s in DossierState if s not in self.states]
        problems += [f"action {a!r} is a step already" for a in self.actions if a in self.transitions]
        outgoing: dict[DossierState, list[Transition]] = {s: [] for s in DossierState}
        for t in self.transitions.values():
            for s in t.sources:
                outgoing[s].append(t)
        for t in self.transitions.values():
            if len(t.to) > 1 and t.sources != [DossierState.needs_supplement]:
                problems.append(f"{t.name}: several targets are only for going back after a supplement")
            for target in t.to:
                if t.ends and outgoing[target]:
                    problems.append(f"{t.name} ends the dossier, but steps lead out of {target.value!r}")
                if not t.ends and not outgoing[target]:
                    problems.append(f"{t.name} leads to {target.value!r}, where nothing follows: mark it `ends`")
            if t.ends and t.stays:
                problems.append(f"{t.name}: a step that ends the dossier must lead somewhere")
        for kind in ("approve", "seal"):
            if [t.result for t in self.transitions.values()].count(kind) != 1:
                problems.append(f"exactly one step must have result {kind!r}")
        for state in (DossierState.received, DossierState.needs_supplement, DossierState.rejected):
            found = [t for t in outgoing[DossierState.receiving] if t.to == [state]]
            if len(found) != 1 or Role.desk not in found[0].roles:
                problems.append(f"intake ending in {state.value!r} needs exactly one desk step from 'receiving'")
        for state, spec in self.states.items():
            if spec.awaits and not any(spec.awaits in t.roles for t in outgoing[state]):
                problems.append(f"state {state.value!r} awaits {spec.awaits.value}, who has no step out of it")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- questions a use case asks

    def transition(self, action: str) -> Transition:
        try:
            return self.transitions[action]
        except KeyError:
            raise ValueError(f"no lifecycle step {action!r} (steps: {', '.join(self.transitions)})") from None

    def state_label(self, state: DossierState | str, lang: str = "vi") -> str:
        spec = self.states[DossierState(state)]
        return (spec.label_en or spec.label) if lang == "en" else spec.label

    def step_label(self, action: str, lang: str = "vi") -> str:
        """The label of an action of the audit trail: a step's, or one of ``actions`` (an unknown action as it is)."""
        t = self.transitions.get(action) or self.actions.get(action)
        if t is None:
            return action
        return (t.label_en or t.label) if lang == "en" else t.label

    def role_label(self, role: Role | str, lang: str = "vi") -> str:
        role = Role(role)
        return self.roles_en.get(role, self.roles[role]) if lang == "en" else self.roles[role]

    def role_labels(self, roles: Iterable[Role]) -> str:
        return ", ".join(self.roles[r] for r in roles) or "không có vai trò"

    @cached_property
    def final_states(self) -> frozenset[DossierState]:
        """States nothing leads out of: the dossier has ended."""
        sources = {s for t in self.transitions.values() for s in t.sources}
        return frozenset(s for s in DossierState if s not in sources)

    @cached_property
    def open_states(self) -> frozenset[DossierState]:
        """States of a dossier somebody still has to act on (not a reservation, not ended)."""
        return frozenset(DossierState) - self.final_states - {DossierState.receiving}

    def awaiting(self, role: Role) -> frozenset[DossierState]:
        """The states in ``role``'s work list."""
        return frozenset(s for s, spec in self.states.items() if spec.awaits == role)

    def intake(self, state: DossierState) -> Transition:
        """The desk's step that records a dossier received into ``state`` (received, needs_supplement, rejected)."""
        for t in self.transitions.values():
            if DossierState.receiving in t.sources and t.to == [state]:
                return t
        raise ValueError(f"intake does not end in {state.value!r}")

    def authorize(self, t: Transition, actor: Actor) -> Role:
        """The role ``actor`` takes ``t`` in (the first of the step's roles the actor holds); Forbidden if none."""
        for role in t.roles:
            if role in actor.roles:
                return role
        raise Forbidden(
            f"user {actor.username!r} (roles: {', '.join(sorted(actor.roles)) or 'none'}) may not {t.name!r}; "
            f"it needs one of: {', '.join(t.roles)}",
            f"Người dùng {actor.display_name} ({self.role_labels(sorted(actor.roles))}) không được phép thực hiện "
            f"bước \"{t.label}\"; bước này cần vai trò: {self.role_labels(t.roles)}.",
        )

    def check_state(self, t: Transition, code: str, state: DossierState) -> None:
        """InvalidState unless ``t`` may start from ``state``."""
        if state in t.sources and state != DossierState.receiving:
            return
        raise InvalidState(
            f"dossier {code} is {state.value!r}; {t.name!r} starts from one of {', '.join(t.sources)}",
            f"Hồ sơ {code} đang ở trạng thái \"{self.state_label(state)}\", không thể thực hiện bước "
            f"\"{t.label}\".",
        )

    def target(self, t: Transition, state: DossierState, history: Iterable[tuple[DossierState | None, DossierState]]
               ) -> DossierState:
        """Where ``t`` leads from ``state``. ``history`` is the audit trail as (from, to) pairs, oldest first:
        with several targets, the dossier goes back to where it was when the last supplement was asked for."""
        if t.stays:
            return state
        if len(t.to) == 1:
            return t.to[0]
        asked_from = None
        for before, after in history:
            if after == DossierState.needs_supplement and before not in (None, DossierState.needs_supplement):
                asked_from = before
        back = DossierState.received if asked_from in (None, DossierState.receiving) else asked_from
        if back not in t.to:
            raise InvalidState(f"{t.name}: cannot go back to {back!r}; targets {', '.join(t.to)}")
        return back

    def path(self, start: DossierState, goal: DossierState) -> list[Transition]:
        """The fewest steps from ``start`` to ``goal`` that move the dossier on (a batch's remaining steps);
        empty when ``start`` is ``goal``; InvalidState when ``goal`` cannot be reached."""
        paths: dict[DossierState, list[Transition]] = {start: []}
        todo = deque([start])
        while todo:
            here = todo.popleft()
            if here == goal:
                return paths[here]
            for t in self.transitions.values():
                if here in t.sources and len(t.to) == 1 and t.to[0] not in paths and here != DossierState.receiving:
                    paths[t.to[0]] = [*paths[here], t]
                    todo.append(t.to[0])
        raise InvalidState(
            f"no steps lead from {start.value!r} to {goal.value!r}",
            f"Hồ sơ đang ở trạng thái \"{self.state_label(start)}\", không thể chuyển sang "
            f"\"{self.state_label(goal)}\".",
        )


class Payment(BaseModel):
    """A cashless payment of the fee: a bank transfer or a payment gateway's transaction reference."""

    method: Literal["bank_transfer", "gateway"]
    reference: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]{3,63}$")
    amount: int | None = Field(None, ge=0, description="In đồng, when known")


class Delivery(BaseModel):
    """How the result is handed over: at the counter, by post (with its tracking number), or online."""

    channel: Literal["counter", "post", "online"]
    tracking_number: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{3,39}$")

    @model_validator(mode="after")
    def _tracked_by_post(self) -> Delivery:
        if (self.channel == "post") != (self.tracking_number is not None):
            raise ValueError("a tracking number goes with the post channel, and only with it")
        return self


CHANNEL_VI = {"counter": "tại bộ phận một cửa", "post": "qua dịch vụ bưu chính", "online": "trực tuyến"}


def payment_required(procedure: Procedure) -> bool:
    """Whether a fee certainly applies: the catalog's fee is verified and not free. For a conditional or
    unverified fee the desk decides; a payment is recorded when one was made, never demanded blindly."""
    fee = procedure.fee
    return fee is not None and fee.status == "verified" and not fee.free


def due_soon_until(now: datetime, tz: str) -> datetime:
    """The end of "due within one working day" at ``now``: the close of the next working day after today."""
    zone = ZoneInfo(tz)
    return datetime.combine(next_working_day(now.astimezone(zone).date()), CLOSE, tzinfo=zone)


def _build(raw: Any, source: str) -> Lifecycle:
    try:
        return Lifecycle.model_validate(raw)
    except ValidationError as exc:
        raise ConfigurationError(
            f"Invalid lifecycle file {source}: {exc}", "Tệp quy trình xử lý hồ sơ không hợp lệ; liên hệ quản trị."
        ) from exc


def load_lifecycle_file(path: Path) -> Lifecycle:
    """Load and check a lifecycle YAML file (tests, site variants)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"Cannot read lifecycle file {path}: {exc}", "Không đọc được tệp quy trình.") from exc
    return _build(raw, str(path))


@lru_cache(maxsize=1)
def load_lifecycle() -> Lifecycle:
    """The bundled lifecycle (package data), loaded and checked once per process."""
    text = resources.files("pipeline").joinpath("data/lifecycle.yaml").read_text(encoding="utf-8")
    return _build(yaml.safe_load(text), "pipeline/data/lifecycle.yaml")
