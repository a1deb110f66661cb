"""Rendering: the templates, the language of a request, the context every page gets."""

from __future__ import annotations

import secrets
from datetime import datetime
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from pipeline.domain.lifecycle import load_lifecycle
from pipeline.web.i18n import LANG_COOKIE, Lang, translator
from pipeline.web.security import CSRF_COOKIE, CSRF_FIELD
from signing.pki import ROLE_TITLES

TEMPLATES = Jinja2Templates(directory=str(resources.files("pipeline.web") / "templates"))
TEMPLATES.env.autoescape = True


def language(request: Request) -> Lang:
    asked = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    return "en" if asked == "en" else "vi"


def _toggle_url(request: Request, lang: Lang) -> str:
    url = request.url.include_query_params(lang="vi" if lang == "en" else "en")
    return f"{url.path}?{url.query}"


def local_time(tz: str) -> Any:
    zone = ZoneInfo(tz)

    def fmt(value: datetime | None, with_time: bool = True) -> str:
        if value is None:
            return "—"
        local = value.astimezone(zone)
        return local.strftime("%H:%M %d/%m/%Y" if with_time else "%d/%m/%Y")

    return fmt


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """``template`` with the common context: ``t`` (text in the request's language), ``lang``, the
    language toggle, the signed-in staff member, the CSRF token of the page's forms, ``when`` (local time),
    the lifecycle's labels in the request's language (``state_name``, ``step_name``, ``role_name``)."""
    web = request.app.state.web
    lang = language(request)
    staff = web.current_staff(request)
    anon_csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    csrf = staff.csrf if staff else anon_csrf
    life = load_lifecycle()
    response = TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "t": translator(lang),
            "lang": lang,
            "toggle_url": context.pop("toggle_url", None) or _toggle_url(request, lang),
            "staff": staff,
            "csrf_field": CSRF_FIELD,
            "csrf_token": csrf,
            "when": local_time(web.services.settings.timezone),
            "kiosk": context.pop("kiosk", False),
            "max_mb": web.services.settings.verify_max_mb,
            "upload_mb": web.services.settings.upload_max_mb,
            "role_titles": ROLE_TITLES,
            "state_name": lambda state: life.state_label(state, lang) if state else "",
            "step_name": lambda action: life.step_label(action, lang),
            "role_name": lambda role: life.role_label(role, lang) if role else "",
            **context,
        },
        status_code=status_code,
    )
    if request.query_params.get("lang") in ("vi", "en"):
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax", httponly=True)
    if CSRF_COOKIE not in request.cookies:
        response.set_cookie(CSRF_COOKIE, anon_csrf, samesite="strict", httponly=True, secure=web.secure_cookies)
    response.headers.setdefault("Cache-Control", "no-store")
    return response
