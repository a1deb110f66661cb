"""National databases: the population DB (is this ID this person?) and the citizen's electronic data store.

Two adapter protocols, three implementations:

- :class:`HttpNationalDb` talks to a national-database service over HTTP (``HOSO_NATDB=http``,
  ``HOSO_NATDB_URL``; the reference service is ``pipeline.national.service``) with its bearer token
  (``HOSO_NATDB_TOKEN`` or ``HOSO_NATDB_TOKEN_FILE``), a timeout per attempt and bounded retries. A service
  that is down, slow or refuses the token gives ``unverified`` and no reuse — never a crash and never a
  wrong rejection.
- :class:`RegistryNationalDb` keeps both in the registry database (tables ``natdb_*``), seeded with
  synthetic citizens (``pipeline/data/citizens_seed.yaml``). It backs the reference service and is the
  embedded default (``HOSO_NATDB=embedded``), so a first run verifies the sample's citizen and reuses
  documents across dossiers with nothing else running — like the development PKI, it is a stand-in.
- :class:`DisabledNationalDb` (``HOSO_NATDB=off``): every check is ``unverified``, nothing is reused.

How the desk uses them (verify the applicant, reuse stored documents, keep the signed ones) is the
dossier domain's: ``pipeline/domain/applicant.py``.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import httpx
import sqlalchemy as sa
import yaml
from pydantic import BaseModel, Field
from rapidfuzz.distance import Levenshtein
from sqlalchemy import exc
from sqlalchemy.orm import Session

from pipeline.core.errors import ConfigurationError, ExitCode, HosoError
from pipeline.core.models import ApplicantCheck, CheckOutcome
from pipeline.core.text import fold, parse_date
from pipeline.national.citizens import distinct_citizens
from storage.registry import NatdbCitizen, NatdbCitizenDocument, Registry

if TYPE_CHECKING:
    from pipeline.core.settings import Settings

log = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"^\d{12}$")
CHECKED_FIELDS = ("full_name", "date_of_birth")
NAME_SIMILARITY = 0.9
FIELD_LABELS_VI = {"full_name": "họ và tên", "date_of_birth": "ngày sinh"}


class NationalDbUnavailable(HosoError):
    """The national-database service did not answer usefully (down, timeout, 5xx, bad reply)."""

    exit_code = ExitCode.storage_failed
    default_vi = "Không kết nối được cơ sở dữ liệu quốc gia."


class Citizen(BaseModel):
    id_number: str
    full_name: str
    date_of_birth: str = Field(description="dd/mm/yyyy")
    gender: str


class StoredDocument(BaseModel):
    """A signed digitised document kept in a citizen's electronic data store."""

    id_number: str
    doc_type: str
    object_key: str
    sha256: str
    dossier_code: str
    pages: list[int] = Field(default_factory=list)
    fields: dict[str, str] = Field(default_factory=dict)
    saved_at: datetime | None = None


class VerifyRequest(BaseModel):
    id_number: str
    full_name: str | None = None
    date_of_birth: str | None = None


class VerifyAnswer(BaseModel):
    outcome: CheckOutcome
    mismatched: list[str] = Field(default_factory=list)


@runtime_checkable
class PopulationRegistry(Protocol):
    def verify_citizen(
        self, id_number: str, full_name: str | None, date_of_birth: str | None
    ) -> ApplicantCheck:
        """verified | mismatch (which fields) | not_found | unverified (with the reason); never raises."""
        ...


@runtime_checkable
class CitizenDataStore(Protocol):
    def save_document(self, document: StoredDocument) -> StoredDocument:
        """Keep (or replace: one per citizen, type and dossier) a signed digitised document."""
        ...

    def find_documents(self, id_number: str, doc_types: Iterable[str]) -> list[StoredDocument]:
        """The citizen's stored documents of these types, newest first; NationalDbUnavailable if down."""
        ...


class NationalDb(PopulationRegistry, CitizenDataStore, Protocol):
    def close(self) -> None: ...


# --- comparison rules -----------------------------------------------------------------------------


def normalise_name(name: str) -> str:
    """Case-, diacritic- and space-insensitive form of a Vietnamese name (OCR drops marks, not letters)."""
    return " ".join(fold(name).split())


def normalise_date(value: str) -> str | None:
    """``dd/mm/yyyy`` from ``dd/mm/yyyy``, ``d-m-yyyy`` or ISO ``yyyy-mm-dd``; None if not a date."""
    iso = re.fullmatch(r"\s*(\d{4})-(\d{2})-(\d{2})\s*", value)
    if iso:
        value = f"{iso.group(3)}/{iso.group(2)}/{iso.group(1)}"
    return parse_date(value.replace("-", "/").replace(".", "/"))


def same_name(read: str, registered: str) -> bool:
    """Equal after :func:`normalise_name`, tolerating about one OCR slip per ten letters.

    ``Đặng Thị Mai`` read as ``DANG THI MAl`` is the same person; ``Đặng Thị Lan`` is not (two edits in 12).
    """
    return Levenshtein.normalized_similarity(normalise_name(read), normalise_name(registered)) >= NAME_SIMILARITY


def compare_citizen(citizen: Citizen, full_name: str | None, date_of_birth: str | None) -> VerifyAnswer:
    """Only the fields given are compared; a field given but unreadable counts as a mismatch."""
    mismatched = []
    if full_name and not same_name(full_name, citizen.full_name):
        mismatched.append("full_name")
    if date_of_birth and normalise_date(date_of_birth) != citizen.date_of_birth:
        mismatched.append("date_of_birth")
    return VerifyAnswer(outcome="mismatch" if mismatched else "verified", mismatched=mismatched)


def check_of(id_number: str, answer: VerifyAnswer) -> ApplicantCheck:
    notes = {
        "verified": "Đã xác thực số định danh với Cơ sở dữ liệu quốc gia về dân cư.",
        "not_found": "Không tìm thấy số định danh trong Cơ sở dữ liệu quốc gia về dân cư.",
        "mismatch": "Thông tin không khớp với Cơ sở dữ liệu quốc gia về dân cư: "
        + ", ".join(FIELD_LABELS_VI.get(f, f) for f in answer.mismatched)
        + ".",
    }
    return ApplicantCheck(
        outcome=answer.outcome,
        id_number=id_number,
        mismatched=answer.mismatched,
        notes_vi=[notes[answer.outcome]] if answer.outcome in notes else [],
    )


def unverified(id_number: str, reason: str) -> ApplicantCheck:
    return ApplicantCheck(
        outcome="unverified",
        id_number=id_number,
        reason=reason,
        notes_vi=["Chưa xác thực được với Cơ sở dữ liệu quốc gia về dân cư (hệ thống không phản hồi); "
                  "hồ sơ vẫn được tiếp nhận."],
    )


# --- the synthetic population ---------------------------------------------------------------------


@lru_cache(maxsize=1)
def synthetic_citizens() -> tuple[Citizen, ...]:
    """The seed population: fixed citizens plus ``generated`` ones, a pure function of the seed file.

    The generated ones come from :mod:`pipeline.national.citizens`, with the seed file's seed and birth years.
    """
    spec = yaml.safe_load((files("pipeline") / "data" / "citizens_seed.yaml").read_text(encoding="utf-8"))
    people = [Citizen(**c) for c in spec["fixed"]]
    first, last = spec["birth_years"]
    generated = distinct_citizens(
        random.Random(spec["seed"]), spec["generated"], born=(first, last), taken=(c.id_number for c in people)
    )
    people += (
        Citizen(id_number=c.id_number, full_name=c.full_name, date_of_birth=c.date_of_birth, gender=c.gender)
        for c in generated
    )
    return tuple(people)


# --- in the registry database ---------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class RegistryNationalDb:
    """Population DB and citizen data store in the registry database (reference / embedded)."""

    def __init__(self, registry: Registry) -> None:
        self.engine = registry.engine
        self._prepare()

    def _prepare(self) -> None:
        """Seed the population once; the tables are the registry's (created with it)."""
        try:
            with self._session() as session:
                if session.scalar(sa.select(sa.func.count()).select_from(NatdbCitizen)):
                    return
                session.add_all(NatdbCitizen(**c.model_dump()) for c in synthetic_citizens())
        except NationalDbUnavailable as err:
            if not isinstance(err.__cause__, exc.IntegrityError):
                raise  # else another process seeded it first

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except exc.SQLAlchemyError as err:
            raise NationalDbUnavailable(f"national database tables unavailable: {err}") from err

    def citizen_count(self) -> int:
        with self._session() as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(NatdbCitizen)) or 0)

    def lookup(self, id_number: str, full_name: str | None, date_of_birth: str | None) -> VerifyAnswer:
        """The population DB's answer; NationalDbUnavailable if the database fails."""
        with self._session() as session:
            row = session.get(NatdbCitizen, id_number)
            if row is None:
                return VerifyAnswer(outcome="not_found")
            citizen = Citizen.model_validate(row, from_attributes=True)
        return compare_citizen(citizen, full_name, date_of_birth)

    def verify_citizen(
        self, id_number: str, full_name: str | None, date_of_birth: str | None
    ) -> ApplicantCheck:
        try:
            return check_of(id_number, self.lookup(id_number, full_name, date_of_birth))
        except NationalDbUnavailable as err:
            return unverified(id_number, str(err))

    def save_document(self, document: StoredDocument) -> StoredDocument:
        saved = document.model_copy(update={"saved_at": _utc(document.saved_at or datetime.now(UTC))})
        values = saved.model_dump(exclude={"id_number", "doc_type", "dossier_code"})
        for attempt in (1, 2):
            try:
                with self._session() as session:
                    row = session.scalars(
                        sa.select(NatdbCitizenDocument).where(
                            NatdbCitizenDocument.id_number == saved.id_number,
                            NatdbCitizenDocument.doc_type == saved.doc_type,
                            NatdbCitizenDocument.dossier_code == saved.dossier_code,
                        )
                    ).one_or_none()
                    if row is None:
                        session.add(
                            NatdbCitizenDocument(
                                id_number=saved.id_number,
                                doc_type=saved.doc_type,
                                dossier_code=saved.dossier_code,
                                **values,
                            )
                        )
                    else:
                        for name, value in values.items():
                            setattr(row, name, value)
                return saved
            except NationalDbUnavailable as err:
                # A concurrent save of the same document won the insert: the second pass updates it.
                if attempt == 2 or not isinstance(err.__cause__, exc.IntegrityError):
                    raise
        return saved

    def find_documents(self, id_number: str, doc_types: Iterable[str]) -> list[StoredDocument]:
        types = sorted(set(doc_types))
        if not types:
            return []
        with self._session() as session:
            rows = session.scalars(
                sa.select(NatdbCitizenDocument)
                .where(NatdbCitizenDocument.id_number == id_number, NatdbCitizenDocument.doc_type.in_(types))
                .order_by(NatdbCitizenDocument.saved_at.desc(), NatdbCitizenDocument.id.desc())
            )
            return [StoredDocument.model_validate(r, from_attributes=True) for r in rows]

    def close(self) -> None:
        """The engine belongs to the registry; nothing to release here."""


# --- over HTTP ------------------------------------------------------------------------------------


class HttpNationalDb:
    """Client of a national-database service: ``timeout`` seconds per attempt, ``retries`` extra attempts.

    After the retries are spent the service is taken as down for the rest of this client's life (one
    intake), so a dead service costs one round of attempts, not one per question.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 3.0,
        retries: int = 2,
        backoff: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._down: str | None = None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout), trust_env=False, headers=headers
        )

    def __repr__(self) -> str:  # never the token
        return f"HttpNationalDb({self.base_url!r})"

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self._down:
            raise NationalDbUnavailable(self._down, transient="HTTP 401" not in self._down)
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 2.0))
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.TimeoutException:
                problem = f"no answer within {self.timeout:g} s"
                continue
            except httpx.TransportError as err:
                problem = f"{type(err).__name__}: {err}"
                continue
            if response.status_code >= 500:
                problem = f"HTTP {response.status_code}"
                continue
            if response.status_code == 401:
                # Not worth retrying, nor asking again during this intake: the token is wrong or missing.
                self._down = (
                    f"national database {self.base_url} refused this client's credentials (HTTP 401); "
                    "check HOSO_NATDB_TOKEN / HOSO_NATDB_TOKEN_FILE"
                )
                log.error("%s", self._down)
                raise NationalDbUnavailable(self._down, transient=False)
            return response
        self._down = f"national database {self.base_url} unavailable after {self.retries + 1} attempts: {problem}"
        log.warning("%s", self._down)
        raise NationalDbUnavailable(self._down, transient=True)

    def verify_citizen(
        self, id_number: str, full_name: str | None, date_of_birth: str | None
    ) -> ApplicantCheck:
        body = VerifyRequest(id_number=id_number, full_name=full_name, date_of_birth=date_of_birth)
        try:
            response = self._request("POST", "/v1/population/verify", json=body.model_dump())
            if response.status_code != 200:
                return unverified(id_number, f"HTTP {response.status_code} from {self.base_url}")
            return check_of(id_number, VerifyAnswer.model_validate_json(response.content))
        except NationalDbUnavailable as err:
            return unverified(id_number, str(err))
        except ValueError as err:  # an answer that is not the protocol's
            return unverified(id_number, f"unreadable answer from {self.base_url}: {err}")

    def save_document(self, document: StoredDocument) -> StoredDocument:
        response = self._request(
            "PUT", f"/v1/citizens/{document.id_number}/documents", json=document.model_dump(mode="json")
        )
        if response.status_code not in (200, 201):
            raise NationalDbUnavailable(f"saving a document: HTTP {response.status_code} {response.text[:200]}")
        return StoredDocument.model_validate_json(response.content)

    def find_documents(self, id_number: str, doc_types: Iterable[str]) -> list[StoredDocument]:
        types = sorted(set(doc_types))
        if not types:
            return []
        response = self._request("GET", f"/v1/citizens/{id_number}/documents", params={"type": types})
        if response.status_code != 200:
            raise NationalDbUnavailable(f"finding documents: HTTP {response.status_code} {response.text[:200]}")
        try:
            return [StoredDocument.model_validate(d) for d in response.json()]
        except ValueError as err:
            raise NationalDbUnavailable(f"unreadable answer from {self.base_url}: {err}") from err

    def close(self) -> None:
        self._client.close()


class DisabledNationalDb:
    """No national databases (``HOSO_NATDB=off``): unverified, nothing stored, nothing reused."""

    def verify_citizen(
        self, id_number: str, full_name: str | None, date_of_birth: str | None
    ) -> ApplicantCheck:
        return unverified(id_number, "national databases are off (HOSO_NATDB=off)")

    def save_document(self, document: StoredDocument) -> StoredDocument:
        return document

    def find_documents(self, id_number: str, doc_types: Iterable[str]) -> list[StoredDocument]:
        return []

    def close(self) -> None:
        pass


def open_national_db(settings: Settings, registry: Registry) -> NationalDb:
    """The national databases the settings name (see the module docstring)."""
    if settings.natdb == "off":
        return DisabledNationalDb()
    if settings.natdb == "http":
        if not settings.natdb_url:
            raise ConfigurationError(
                "HOSO_NATDB=http needs HOSO_NATDB_URL", "Thiếu địa chỉ cơ sở dữ liệu quốc gia (HOSO_NATDB_URL)."
            )
        token = settings.resolved_natdb_token()
        if token is None:
            log.warning("HOSO_NATDB=http without HOSO_NATDB_TOKEN(_FILE): the service will refuse every question")
        return HttpNationalDb(
            settings.natdb_url, token=token, timeout=settings.natdb_timeout, retries=settings.natdb_retries
        )
    try:
        return RegistryNationalDb(registry)
    except NationalDbUnavailable as err:
        log.warning("embedded national databases unavailable: %s", err)
        return DisabledNationalDb()
