"""The REST API under ``/api/`` (OpenAPI at ``/openapi.json``).

Public: the handbook, a citizen's lookup (with its secret), an e-result's check, a PDF's signature check —
the last three rate-limited per client address. Everything else needs ``Authorization: Bearer <token>``
(``hoso users token …``): no or an invalid token is 401, a token whose role may not do it 403.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from pipeline.core.errors import Forbidden, InvalidRequest
from pipeline.core.models import Role
from pipeline.domain import handbook
from pipeline.domain.lifecycle import Actor, load_lifecycle
from pipeline.domain.stats import ProvinceStats, compute_stats
from pipeline.usecases.desk import stored_copy
from pipeline.usecases.lifecycle import WorkItem, actor_for_token, due_soon, overdue, worklist
from pipeline.usecases.portal import CitizenStatus, ResultCheck, check_issued_result, check_uploaded_pdf, citizen_status
from pipeline.web import steps
from pipeline.web.forms import read_body, read_form
from pipeline.web.jobs import intake_runner
from pipeline.web.public import CODE, client_key
from signing.verify import VerificationReport
from storage.registry import DossierRecord

router = APIRouter(prefix="/api")
bearer = HTTPBearer(auto_error=False, description="An API token: `hoso users token USER --scope ROLE`")

NOT_FOUND = {"error": "not_found", "message_vi": "Không có hồ sơ với mã và mã tra cứu này; vui lòng hỏi tại quầy.",
             "message_en": "No such dossier with this code and secret; ask at the desk."}


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def token_actor(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
                ) -> Actor:
    """The user an API token acts for, in the token's role; 401 without a valid token."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("an API token is needed: Authorization: Bearer <token>")
    try:
        return actor_for_token(request.app.state.web.services, credentials.credentials)
    except Forbidden:
        raise _unauthorized("invalid, expired or revoked API token") from None


def role_in(*roles: Role) -> Any:
    """A dependency: the token's actor, 403 unless its role is one of ``roles``."""
    allowed = frozenset(roles)

    def check(actor: Annotated[Actor, Depends(token_actor)]) -> Actor:
        if not actor.roles & allowed:
            raise Forbidden(f"the token's role may not do this (needs {sorted(r.value for r in allowed)})",
                            "Mã truy cập không có vai trò được phép.")
        return actor

    return check


AnyStaff = Annotated[Actor, Depends(role_in(*Role))]


def _limited(request: Request) -> JSONResponse | None:
    allowed, wait = request.app.state.web.lookups.allow(client_key(request))
    if allowed:
        return None
    return JSONResponse({"error": "rate_limited", "retry_after": wait,
                         "message_vi": f"Quá nhiều lượt tra cứu; thử lại sau {wait} giây.",
                         "message_en": f"Too many lookups; retry in {wait} s."},
                        status_code=429, headers={"Retry-After": str(wait)})


# --- public -------------------------------------------------------------------------------------


@router.get("/procedures", tags=["public"])
def procedures(request: Request, q: str = "") -> list[handbook.HandbookEntry]:
    """The procedure handbook, searched by words (case and diacritics ignored)."""
    return handbook.search(request.app.state.web.services.catalog, q[:200])


@router.get("/procedures/{key}", tags=["public"])
def procedure(request: Request, key: str) -> handbook.HandbookEntry:
    catalog = request.app.state.web.services.catalog
    return handbook.entry(catalog, catalog.procedure(key))


@router.get("/lookup/{code}", tags=["public"], response_model=CitizenStatus,
            responses={404: {"description": "Unknown dossier or wrong secret (the same answer)"},
                       429: {"description": "Too many lookups from this address"}})
def lookup(request: Request, code: str, s: str = "",
           x_lookup_secret: Annotated[str, Header()] = "") -> Any:
    """A dossier's status for the holder of its lookup secret (query ``s`` or header ``X-Lookup-Secret``)."""
    limited = _limited(request)
    if limited is not None:
        return limited
    secret = (x_lookup_secret or s).strip()
    try:
        if not CODE.match(code) or not secret:
            raise Forbidden("malformed lookup")
        return citizen_status(request.app.state.web.services, code, secret)
    except Forbidden:
        return JSONResponse(NOT_FOUND, status_code=404)


@router.get("/results/{code}", tags=["public"], response_model=ResultCheck,
            responses={404: {"description": "No e-result with this dossier and verification code"}})
def result(request: Request, code: str, v: str) -> Any:
    """The e-result of ``code`` with verification code ``v`` (from its QR), verified."""
    limited = _limited(request)
    if limited is not None:
        return limited
    found = check_issued_result(request.app.state.web.services, code, v) if CODE.match(code) and len(v) <= 40 \
        else None
    if found is None:
        return JSONResponse({"error": "not_found", "message_vi": "Không tìm thấy kết quả điện tử với mã này.",
                             "message_en": "No e-result with this code."}, status_code=404)
    return found


@router.post("/verify", tags=["public"], response_model=VerificationReport,
             openapi_extra={"requestBody": {"content": {"application/pdf": {"schema": {"type": "string",
                                                                                      "format": "binary"}}}}})
async def verify(request: Request) -> Any:
    """Check every signature of the PDF in the request body (kept in memory, never stored)."""
    limited = _limited(request)
    if limited is not None:
        return limited
    services = request.app.state.web.services
    pdf = await read_body(request, services.settings.verify_max_mb * 1_000_000)
    if not pdf:
        raise InvalidRequest("empty body", "Chưa có tệp PDF.")
    return await run_in_threadpool(check_uploaded_pdf, services, pdf)


# --- staff (API tokens) -------------------------------------------------------------------------


class Me(BaseModel):
    username: str
    display_name: str
    roles: list[Role]


@router.get("/me", tags=["staff"])
def me(actor: AnyStaff) -> Me:
    return Me(username=actor.username, display_name=actor.display_name, roles=sorted(actor.roles))


@router.get("/worklist", tags=["staff"])
def my_worklist(request: Request, actor: AnyStaff) -> list[WorkItem]:
    """The dossiers awaiting the token's role."""
    services = request.app.state.web.services
    return [item for role in sorted(actor.roles) for item in worklist(services, role)]


@router.get("/due-soon", tags=["staff"])
def due_soon_list(request: Request, _actor: AnyStaff) -> list[WorkItem]:
    return due_soon(request.app.state.web.services)


@router.get("/overdue", tags=["staff"])
def overdue_list(request: Request, _actor: AnyStaff) -> list[WorkItem]:
    return overdue(request.app.state.web.services)


@router.get("/dossiers/{code}", tags=["staff"])
def dossier(request: Request, code: str, _actor: AnyStaff) -> DossierRecord:
    """A dossier with its documents, artifacts and audit trail."""
    return request.app.state.web.services.registry.get(code)


class StepRequest(BaseModel):
    """A step's inputs; which ones a step reads: ``pipeline/web/steps.py`` (FIELDS)."""

    note: str = ""
    reasons: list[str] = []
    missing: list[list[str]] = []
    days: int | None = None
    channel: str = ""
    tracking: str = ""
    method: str = ""
    reference: str = ""


class StepDone(BaseModel):
    dossier_code: str
    action: str
    role: Role
    state: str
    state_label: str


@router.post("/dossiers/{code}/steps/{action}", tags=["staff"])
def step(request: Request, code: str, action: str, body: StepRequest, actor: AnyStaff) -> StepDone:
    """Take a lifecycle step as the token's user (the lifecycle checks role and state: 403, 409)."""
    lc = load_lifecycle()
    if action not in steps.FIELDS:
        raise HTTPException(404, f"no step {action!r}")
    if not actor.roles & set(lc.transition(action).roles):
        raise Forbidden(f"the token's role may not take step {action!r}",
                        f"Mã truy cập không có vai trò được thực hiện bước \"{lc.transition(action).label}\".")
    values = body.model_dump()
    values["reasons"] = "\n".join(body.reasons)
    values["missing"] = "\n".join("|".join(slot) for slot in body.missing)
    values["days"] = "" if body.days is None else str(body.days)
    outcome = steps.take(request.app.state.web.services, code, action, actor, lambda k: str(values.get(k) or ""))
    return StepDone(dossier_code=code, action=outcome.action, role=outcome.role, state=outcome.record.state.value,
                    state_label=lc.state_label(outcome.record.state))


@router.post("/ingest", tags=["staff"], status_code=202,
             openapi_extra={"requestBody": {"content": {"application/octet-stream": {"schema": {
                 "type": "string", "format": "binary"}}}}})
async def ingest_scan(request: Request, procedure: str, actor: Annotated[Actor, Depends(role_in(Role.desk))],
                      applicant_id: str | None = None) -> dict[str, Any]:
    """Receive a scan (PDF or image, the request body) in the background; poll ``/api/jobs/{id}``."""
    web = request.app.state.web
    key = web.services.catalog.procedure(procedure).key
    data = await read_body(request, web.services.settings.upload_max_mb * 1_000_000)
    if not data:
        raise InvalidRequest("empty body", "Chưa có tệp quét.")

    return web.jobs.submit(actor.username, key, [("scan", data)],
                           intake_runner(web.services, key, applicant_id, actor)).public()


class HandedOff(BaseModel):
    """What a desk command gets back from ``/api/desk/intake``: the job (with the receipt, the lookup link
    and ``already_done``), and where to fetch the files it writes."""

    job: dict[str, Any]
    digitised_url: str
    citizen_form: str | None = None  # the form's artifact name, e.g. ``form-01-1``
    citizen_form_url: str | None = None
    document_labels: dict[str, str] = {}  # the receipt's document types → the catalog's labels, for the printout
    timezone: str | None = None  # the agency's, in which the printout shows the receipt's times


@router.post("/desk/intake", tags=["staff"], response_model=HandedOff,
             openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["procedure", "input", "page"], "properties": {
                     "procedure": {"type": "string"}, "applicant_id": {"type": "string"},
                     "input": {"type": "string", "description": 'JSON: {"folder": NAME or "", "files": [NAMES]}'},
                     "page": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}})
async def desk_intake(request: Request, actor: Annotated[Actor, Depends(role_in(Role.desk))]) -> HandedOff:
    """A desk command's intake (``hoso ingest --server``), answered when the receipt is ready.

    The input keeps its file names (and its folder's name), so its identity and object keys are the ones
    the command would have made itself; the desk chain runs on this service's warm OCR workers, classifier
    and signer, queued behind any other intake. A refusal answers with the use case's error (its ``error``
    is the exit code's name).
    """
    web = request.app.state.web
    form = await read_form(request, web.services.settings.upload_max_mb * 1_000_000)
    key = web.services.catalog.procedure(form.get("procedure")).key
    try:
        described = json.loads(form.get("input") or "null")
        folder, names = str(described.get("folder") or ""), [str(n) for n in described["files"]]
    except (ValueError, TypeError, KeyError, AttributeError):
        raise InvalidRequest("field 'input' must be JSON: {\"folder\": …, \"files\": […]}",
                             "Thiếu mô tả tệp đầu vào.") from None
    pages = form.files.get("page", [])
    if not names or len(names) != len(pages):
        raise InvalidRequest(f"{len(names)} file name(s) for {len(pages)} uploaded file(s)",
                             "Số tên tệp không khớp số tệp tải lên.")
    applicant_id = form.get("applicant_id").strip() or None
    job = web.jobs.submit(actor.username, key, [(n, p.data) for n, p in zip(names, pages, strict=True)],
                          intake_runner(web.services, key, applicant_id, actor), named=folder)
    await run_in_threadpool(job.finished_event.wait)
    if job.failure is not None:
        raise job.failure
    catalog, documents = web.services.catalog, (job.receipt or {}).get("documents") or []
    return HandedOff(job=job.public(), digitised_url=f"/api/dossiers/{job.dossier_code}/digitised.pdf",
                     citizen_form=job.citizen_form,
                     citizen_form_url=f"/api/jobs/{job.id}/citizen-form.pdf" if job.citizen_pdf else None,
                     document_labels={d["type"]: catalog.label(d["type"]) for d in documents},
                     timezone=web.services.settings.timezone)


@router.get("/jobs/{job_id}", tags=["staff"])
def job(request: Request, job_id: str, actor: Annotated[Actor, Depends(role_in(Role.desk))]) -> dict[str, Any]:
    found = request.app.state.web.jobs.get(job_id)
    if found is None or found.owner != actor.username:
        raise HTTPException(404, "no such job")
    return found.public()


@router.get("/jobs/{job_id}/citizen-form.pdf", tags=["staff"], response_class=Response)
def job_citizen_form(request: Request, job_id: str, actor: Annotated[Actor, Depends(role_in(Role.desk))]
                     ) -> Response:
    """The citizen's copy of the desk's form of this job (with the lookup secret; held in memory only)."""
    found = request.app.state.web.jobs.get(job_id)
    if found is None or found.owner != actor.username or not found.citizen_pdf:
        raise HTTPException(404, "no citizen copy for this job")
    return Response(found.citizen_pdf, media_type="application/pdf", headers={"Cache-Control": "no-store"})


@router.get("/dossiers/{code}/digitised.pdf", tags=["staff"], response_class=Response)
async def digitised_copy(request: Request, code: str, _actor: AnyStaff) -> Response:
    """The dossier's certified digitised copy, as recorded (SHA-256 checked)."""
    pdf = await run_in_threadpool(stored_copy, request.app.state.web.services, code)
    return Response(pdf, media_type="application/pdf", headers={"Cache-Control": "no-store"})


@router.get("/stats", tags=["staff"])
def stats(request: Request, start: date, end: date,
          _actor: Annotated[Actor, Depends(role_in(Role.approver, Role.admin, Role.clerk, Role.desk,
                                                   Role.specialist))]) -> ProvinceStats:
    """Decision 766 indicators over the dossiers received from ``start`` to ``end`` (inclusive)."""
    if end < start:
        raise InvalidRequest("end is before start", "Ngày kết thúc trước ngày bắt đầu.")
    services = request.app.state.web.services
    return compute_stats(services.registry, start, end, tz=services.settings.timezone)
