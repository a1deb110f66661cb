"""Citizen pages (no sign-in): lookup by dossier code and secret, the e-result check, the handbook, the kiosk."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from pipeline.core.errors import Forbidden
from pipeline.core.models import DossierState
from pipeline.domain import handbook
from pipeline.domain.lifecycle import load_lifecycle
from pipeline.domain.results import parse_verify_payload
from pipeline.usecases.portal import check_issued_result, check_uploaded_pdf, citizen_status
from pipeline.web.forms import read_form, single_upload
from pipeline.web.pages import language, render
from pipeline.web.security import CSRF_COOKIE, CSRF_FIELD, same_token

router = APIRouter(include_in_schema=False)

#: What a dossier code may look like (the agency code, a date, a sequence); anything else is not looked up.
CODE = re.compile(r"^[0-9A-Za-z.\-]{1,64}$")


def client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def rate_limited(request: Request, prefix: str = "") -> Response | None:
    """The 429 page when this client has looked up too often, else None (and the lookup is counted)."""
    allowed, wait = request.app.state.web.lookups.allow(client_key(request))
    if allowed:
        return None
    response = render(request, "rate_limited.html", status_code=429, seconds=wait, prefix=prefix,
                      kiosk=prefix == "/kiosk")
    response.headers["Retry-After"] = str(wait)
    return response


def steps() -> list[str]:
    """The steps a dossier goes through from intake to the result, as the lifecycle names them."""
    lc = load_lifecycle()
    return [lc.transitions["receive"].label] + [t.label for t in lc.path(DossierState.received, DossierState.returned)]


@router.get("/")
def home(request: Request) -> Response:
    return render(request, "home.html")


# --- lookup -------------------------------------------------------------------------------------


def _lookup(request: Request, code: str | None, secret: str | None, prefix: str) -> Response:
    kiosk = prefix == "/kiosk"
    code, secret = (code or "").strip(), (secret or "").strip()
    if not code:
        return render(request, "lookup.html", prefix=prefix, kiosk=kiosk, code="", found=None)
    limited = rate_limited(request, prefix)
    if limited is not None:
        return limited
    web = request.app.state.web
    try:
        if not CODE.match(code) or not secret:
            raise Forbidden("malformed lookup")
        found = citizen_status(web.services, code, secret)
    except Forbidden:
        # The same page, byte for byte, for an unknown code and a wrong secret (the code is not echoed).
        other = "vi" if language(request) == "en" else "en"
        return render(request, "lookup.html", status_code=404, prefix=prefix, kiosk=kiosk, code="", found=None,
                      not_found=True, toggle_url=f"{prefix}/tra-cuu?lang={other}")
    return render(request, "lookup.html", prefix=prefix, kiosk=kiosk, code=code, found=found)


@router.get("/tra-cuu")
def lookup_form(request: Request, code: str | None = None, s: str | None = None) -> Response:
    if code and s:
        return _lookup(request, code, s, "")
    return render(request, "lookup.html", prefix="", code=code or "", found=None)


@router.get("/tra-cuu/{code}")
def lookup(request: Request, code: str, s: str | None = None) -> Response:
    """The QR link of the citizen's forms: ``/tra-cuu/<code>?s=<secret>&…`` (the other parameters say
    what the paper is; only the secret opens the lookup)."""
    if not s:
        return render(request, "lookup.html", prefix="", code=code, found=None)
    return _lookup(request, code, s, "")


# --- e-results ----------------------------------------------------------------------------------


@router.get("/xac-thuc")
def verify_form(request: Request, q: str | None = None) -> Response:
    """The verify page; ``q``: the text of a scanned QR (a URL, or ``HOSO-VERIFY:<code>:<vcode>`` of
    results issued before the QR became a link)."""
    if q:
        parsed = parse_verify_payload(q)
        if parsed is not None:
            return RedirectResponse(f"/xac-thuc/{parsed[0]}?v={parsed[1]}", status_code=303)
        return render(request, "verify.html", status_code=404, unknown=True)
    return render(request, "verify.html")


@router.get("/xac-thuc/{code}")
async def verify_issued(request: Request, code: str, v: str = "") -> Response:
    """Where the e-result's QR lands: is this dossier's result, with this verification code, valid?"""
    limited = rate_limited(request)
    if limited is not None:
        return limited
    web = request.app.state.web
    found = None
    if CODE.match(code) and re.fullmatch(r"[0-9A-Za-z-]{4,40}", v):
        found = await run_in_threadpool(check_issued_result, web.services, code, v)
    if found is None:
        return render(request, "verify.html", status_code=404, unknown=True)
    return render(request, "verify.html", issued=found, report=found.report)


@router.post("/xac-thuc")
async def verify_upload(request: Request) -> Response:
    """Check the signatures of an uploaded PDF (kept in memory, never stored)."""
    web = request.app.state.web
    limited = rate_limited(request)
    if limited is not None:
        return limited
    form = await read_form(request, web.services.settings.verify_max_mb * 1_000_000)
    expected = web.current_staff(request).csrf if web.current_staff(request) else request.cookies.get(CSRF_COOKIE)
    if not same_token(form.get(CSRF_FIELD), expected):
        return render(request, "error.html", status_code=403, message="Phiên làm việc đã hết hạn; vui lòng tải lại "
                      "trang và thử lại.", detail="CSRF token missing or wrong")
    upload = single_upload(form, "file")
    report = await run_in_threadpool(check_uploaded_pdf, web.services, upload.data)
    return render(request, "verify.html", report=report, filename=upload.filename)


# --- handbook and kiosk -------------------------------------------------------------------------


def _handbook(request: Request, q: str, prefix: str) -> Response:
    catalog = request.app.state.web.services.catalog
    return render(request, "handbook.html", entries=handbook.search(catalog, q), q=q, steps=steps(), prefix=prefix,
                  kiosk=prefix == "/kiosk")


@router.get("/thu-tuc")
def handbook_page(request: Request, q: str = "") -> Response:
    return _handbook(request, q[:200], "")


@router.get("/thu-tuc/{key}")
def handbook_entry(request: Request, key: str) -> Response:
    catalog = request.app.state.web.services.catalog
    entry = handbook.entry(catalog, catalog.procedure(key))
    return render(request, "handbook.html", entries=[entry], q="", steps=steps(), prefix="", single=True)


@router.get("/kiosk")
def kiosk(request: Request) -> Response:
    return render(request, "kiosk.html", kiosk=True, prefix="/kiosk")


@router.get("/kiosk/tra-cuu")
def kiosk_lookup(request: Request, code: str | None = None, s: str | None = None) -> Response:
    return _lookup(request, code, s, "/kiosk")


@router.get("/kiosk/thu-tuc")
def kiosk_handbook(request: Request, q: str = "") -> Response:
    return _handbook(request, q[:200], "/kiosk")
