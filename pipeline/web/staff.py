"""Staff pages: sign-in, work queues, the desk's upload, the dossier page with its steps and corrections,
statistics. Every route checks the session and the role server-side; every form carries the CSRF token."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse, RedirectResponse, Response

from pipeline.core.errors import Forbidden, InputEmpty, InvalidRequest
from pipeline.core.models import Role
from pipeline.domain.lifecycle import Actor, load_lifecycle
from pipeline.domain.stats import compute_stats, table_rows
from pipeline.usecases import accounts, review
from pipeline.usecases.lifecycle import STATE_OF_STATUS, actor_for, due_soon, login, overdue, worklist
from pipeline.web import steps as step_forms
from pipeline.web.charts import stats_chart
from pipeline.web.forms import FormData, read_form
from pipeline.web.jobs import DeskJob, intake_runner
from pipeline.web.pages import language, render
from pipeline.web.security import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, StaffSession, same_token

router = APIRouter(prefix="/nhan-vien", include_in_schema=False)

ANY_STAFF = frozenset(Role)
FORM_LIMIT = 64_000  # a form without files


def _signin_redirect(request: Request) -> HTTPException:
    target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="")
    return HTTPException(303, "sign-in needed", headers={"Location": f"/nhan-vien/dang-nhap?next={target}"})


def signed_in(request: Request, roles: frozenset[Role] = ANY_STAFF) -> tuple[StaffSession, Actor]:
    """The session and the user as the registry has them now (disabled users and lost roles count at
    once); a redirect to the sign-in page without a session, 403 without one of ``roles``."""
    web = request.app.state.web
    session = web.current_staff(request)
    if session is None:
        raise _signin_redirect(request)
    try:
        actor = actor_for(web.services, session.username)
    except Forbidden:
        web.sessions.drop(request.cookies.get(SESSION_COOKIE))
        raise _signin_redirect(request) from None
    if not actor.roles & roles:
        raise Forbidden(f"{session.username} lacks any of the roles {sorted(roles)}",
                        "Tài khoản của bạn không có vai trò được phép dùng trang này.")
    return session, actor


async def posted(request: Request, roles: frozenset[Role] = ANY_STAFF, limit: int = FORM_LIMIT
                 ) -> tuple[StaffSession, Actor, FormData]:
    """A staff form: signed in, in one of ``roles``, with the session's CSRF token."""
    session, actor = signed_in(request, roles)
    form = await read_form(request, limit)
    if not same_token(form.get(CSRF_FIELD), session.csrf):
        raise Forbidden("CSRF token missing or wrong", "Phiên làm việc đã hết hạn; vui lòng tải lại trang.")
    return session, actor, form


def _back(path: str, **params: str) -> RedirectResponse:
    query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
    return RedirectResponse(path + (f"?{query}" if query else ""), status_code=303)


# --- sign-in ------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/nhan-vien") and "//" not in target else "/nhan-vien"


@router.get("/dang-nhap")
def signin_form(request: Request, next: str | None = None) -> Response:
    return render(request, "staff/signin.html", next=_safe_next(next))


@router.post("/dang-nhap")
async def signin(request: Request) -> Response:
    web = request.app.state.web
    form = await read_form(request, FORM_LIMIT)
    if not same_token(form.get(CSRF_FIELD), request.cookies.get(CSRF_COOKIE)):
        raise Forbidden("sign-in CSRF token missing or wrong", "Phiên làm việc đã hết hạn; vui lòng tải lại trang.")
    allowed, wait = web.signins.allow(request.client.host if request.client else "unknown")
    if not allowed:
        response = render(request, "rate_limited.html", status_code=429, seconds=wait, prefix="")
        response.headers["Retry-After"] = str(wait)
        return response
    try:
        actor = await run_in_threadpool(login, web.services, form.get("username").strip(), form.get("password"))
    except Forbidden as err:
        return render(request, "staff/signin.html", status_code=401, next=_safe_next(form.get("next")),
                      error=err.message_vi, username=form.get("username"))
    sid, _ = web.sessions.create(actor.username, actor.display_name, actor.roles)
    redirect = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    redirect.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="strict", secure=web.secure_cookies,
                        max_age=int(web.sessions.lifetime_s), path="/")
    return redirect


@router.post("/dang-xuat")
async def signout(request: Request) -> Response:
    await posted(request)
    request.app.state.web.sessions.drop(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/nhan-vien/dang-nhap", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- work queues --------------------------------------------------------------------------------


@router.get("")
def worklists(request: Request) -> Response:
    _, actor = signed_in(request)
    services = request.app.state.web.services
    lc = load_lifecycle()
    queues = [(lc.roles[role], role.value, worklist(services, role)) for role in Role if role in actor.roles
              and role != Role.admin]
    return render(request, "staff/worklists.html", queues=queues, due_soon=due_soon(services),
                  overdue=overdue(services), catalog=services.catalog)


# --- the desk -----------------------------------------------------------------------------------


@router.get("/tiep-nhan")
def desk_form(request: Request) -> Response:
    signed_in(request, frozenset({Role.desk}))
    catalog = request.app.state.web.services.catalog
    procedures = sorted(catalog.procedures.values(), key=lambda p: p.label)
    return render(request, "staff/desk.html", procedures=procedures)


@router.post("/tiep-nhan")
async def desk_upload(request: Request) -> Response:
    web = request.app.state.web
    _, actor, form = await posted(request, frozenset({Role.desk}), web.services.settings.upload_max_mb * 1_000_000)
    job = submit_intake(web, actor, form)
    return _back(f"/nhan-vien/tiep-nhan/{job.id}")


def submit_intake(web: Any, actor: Actor, form: FormData) -> DeskJob:
    """Queue the desk chain over the uploaded scan (one PDF or image, or several page images in order)."""
    services = web.services
    procedure = services.catalog.procedure(form.get("procedure")).key  # UnknownProcedure: 404 before any work
    applicant_id = form.get("applicant_id").strip() or None
    files = [(f.filename, f.data) for f in form.files.get("scan", []) if f.data]
    if not files:
        raise InputEmpty("no scan uploaded", "Chưa chọn tệp quét (PDF hoặc ảnh), hoặc tệp rỗng.")

    return web.jobs.submit(actor.username, procedure, files, intake_runner(services, procedure, applicant_id, actor))


def _own_job(request: Request, job_id: str) -> Any:
    _, actor = signed_in(request, frozenset({Role.desk}))
    job = request.app.state.web.jobs.get(job_id)
    if job is None or job.owner != actor.username:
        raise HTTPException(404, "no such job")
    return job


@router.get("/tiep-nhan/{job_id}")
def desk_job(request: Request, job_id: str) -> Response:
    job = _own_job(request, job_id)
    catalog = request.app.state.web.services.catalog
    receipt = job.receipt or {}
    state = STATE_OF_STATUS.get(receipt.get("status", ""))
    return render(request, "staff/desk_job.html", job=job,
                  state=state,
                  due=datetime.fromisoformat(receipt["due_at"]) if receipt.get("due_at") else None,
                  missing=[[catalog.label(k) for k in slot] for slot in receipt.get("missing", [])])


@router.get("/tiep-nhan/{job_id}/trang-thai")
def desk_job_status(request: Request, job_id: str) -> Response:
    """The job as JSON, for the page's progress poll."""
    return JSONResponse(_own_job(request, job_id).public(), headers={"Cache-Control": "no-store"})


@router.get("/tiep-nhan/{job_id}/phieu.pdf")
def desk_job_form(request: Request, job_id: str) -> Response:
    """The citizen's copy of the desk's form (with the lookup secret), held in memory for this job only."""
    job = _own_job(request, job_id)
    if not job.citizen_pdf:
        raise HTTPException(404, "no citizen copy")
    return Response(job.citizen_pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{job.dossier_code}-phieu.pdf"',
                             "Cache-Control": "no-store"})


# --- a dossier ----------------------------------------------------------------------------------


@router.get("/ho-so/{code}")
def dossier_page(request: Request, code: str, done: str | None = None, copy: str | None = None) -> Response:
    _, actor = signed_in(request)
    web = request.app.state.web
    view = review.dossier(web.services, code, actor)
    life, lang = load_lifecycle(), language(request)
    corrected = "Corrected a document" if lang == "en" else "Sửa thông tin giấy tờ"
    done_label = life.step_label(done, lang) if done in life.transitions else corrected if done == "correct" else None
    handout = None
    if copy and web.copies.get(actor.username, code, copy) is not None:
        number = copy.removeprefix("form-").split("-")[0]
        handout = {"url": f"/nhan-vien/ho-so/{code}/ban-cong-dan/{copy}.pdf", "number": number}
    return render(request, "staff/dossier.html", v=view, done=done_label, step_fields=step_forms.FIELDS,
                  handout=handout)


@router.get("/ho-so/{code}/trang/{page}.png")
def dossier_page_image(request: Request, code: str, page: int, w: int = 240) -> Response:
    signed_in(request)
    png = review.page_thumbnail(request.app.state.web.services, code, page, width=min(max(w, 60), 1200))
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/ho-so/{code}/buoc/{action}")
async def dossier_step(request: Request, code: str, action: str) -> Response:
    """Take lifecycle step ``action`` (the lifecycle checks the role and the state again)."""
    lc = load_lifecycle()
    if action not in lc.transitions or action in ("receive",):
        raise HTTPException(404, "no such step")
    roles = frozenset(lc.transitions[action].roles)
    _, actor, form = await posted(request, roles)
    web = request.app.state.web
    outcome = await run_in_threadpool(step_forms.take, web.services, code, action, actor, form.get)
    copies = []
    for issued in outcome.forms:  # the citizen's copy (with its lookup secret) for this user to print
        if issued.citizen_pdf:
            web.copies.put(actor.username, code, issued.artifact, issued.citizen_pdf)
            copies.append(issued.artifact)
    return _back(f"/nhan-vien/ho-so/{code}", done=action, **({"copy": copies[0]} if copies else {}))


@router.get("/ho-so/{code}/ban-cong-dan/{artifact}.pdf")
def citizen_copy(request: Request, code: str, artifact: str) -> Response:
    """The citizen's copy of a form this user's step just issued (held in memory for them only)."""
    _, actor = signed_in(request)
    pdf = request.app.state.web.copies.get(actor.username, code, artifact)
    if pdf is None:
        raise HTTPException(404, "no citizen copy for this user")
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{code}-{artifact}-cong-dan.pdf"',
                             "Cache-Control": "no-store"})


@router.post("/ho-so/{code}/sua")
async def dossier_correct(request: Request, code: str) -> Response:
    """Correct a document's type or a field by hand (re-validated and recorded in the audit trail)."""
    _, actor, form = await posted(request, review.CORRECTORS)
    services = request.app.state.web.services
    try:
        position = int(form.get("position"))
    except ValueError:
        raise InvalidRequest("position must be a number", "Thiếu số thứ tự giấy tờ cần sửa.") from None
    await run_in_threadpool(
        review.correct, services, code, actor, position, form.get("doc_type") or None,
        form.get("field") or None, form.get("value"), form.get("note"),
    )
    return _back(f"/nhan-vien/ho-so/{code}", done="correct")


# --- statistics ---------------------------------------------------------------------------------

STATS_ROLES = frozenset({Role.approver, Role.admin, Role.clerk, Role.desk, Role.specialist})


def _day(value: str | None, default: date) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"not a date: {value!r}", "Ngày không hợp lệ (YYYY-MM-DD).") from None


@router.get("/thong-ke")
def statistics(request: Request, start: str | None = None, end: str | None = None) -> Response:
    signed_in(request, STATS_ROLES)
    services = request.app.state.web.services
    today = datetime.now(ZoneInfo(services.settings.timezone)).date()  # the centre's day, not UTC's
    first, last = _day(start, today - timedelta(days=30)), _day(end, today)
    if last < first or (last - first).days > 3660:
        raise InvalidRequest("the period is reversed or longer than ten years",
                             "Khoảng thời gian không hợp lệ (ngày kết thúc trước ngày bắt đầu, hoặc quá 10 năm).")
    result = compute_stats(services.registry, first, last, tz=services.settings.timezone)
    return render(request, "staff/stats.html", stats=result, rows=table_rows(result, language(request)),
                  chart=stats_chart(result, language(request)), start=first.isoformat(), end=last.isoformat())




# --- user accounts (admin) ----------------------------------------------------------------------

ADMIN = frozenset({Role.admin})
USERS_PAGE = "/nhan-vien/quan-tri/nguoi-dung"


def _roles_of(form: FormData) -> list[Role]:
    try:
        return [Role(value) for value in form.getlist("roles")]
    except ValueError:
        raise InvalidRequest("unknown role", "Vai trò không hợp lệ.") from None


@router.get("/quan-tri/nguoi-dung")
def users_page(request: Request, done: str | None = None) -> Response:
    _, actor = signed_in(request, ADMIN)
    return render(request, "staff/users.html", users=accounts.users(request.app.state.web.services, actor),
                  roles=list(Role), done=done)


@router.post("/quan-tri/nguoi-dung")
async def users_add(request: Request) -> Response:
    _, actor, form = await posted(request, ADMIN)
    user = await run_in_threadpool(
        accounts.add_user, request.app.state.web.services, actor, form.get("username"), form.get("display_name"),
        _roles_of(form), form.get("password"))
    return _back(USERS_PAGE, done=user.username)


@router.post("/quan-tri/nguoi-dung/{username}/vai-tro")
async def users_roles(request: Request, username: str) -> Response:
    _, actor, form = await posted(request, ADMIN)
    accounts.set_roles(request.app.state.web.services, actor, username, _roles_of(form))
    return _back(USERS_PAGE, done=username)


@router.post("/quan-tri/nguoi-dung/{username}/{change}")
async def users_lock(request: Request, username: str, change: str) -> Response:
    if change not in ("khoa", "mo-khoa"):
        raise HTTPException(404, "no such change")
    _, actor, _form = await posted(request, ADMIN)
    accounts.set_locked(request.app.state.web.services, actor, username, change == "khoa")
    return _back(USERS_PAGE, done=username)
