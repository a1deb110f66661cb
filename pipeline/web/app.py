"""The one-stop centre as a service: one FastAPI application (``hoso serve``) on the process's
:class:`~pipeline.usecases.services.Services` — the same settings, registry, store and keys as the CLI.

Routes are thin: they read the request, check who asks (server-side, on every route), call a use case and
render a template or JSON. Use cases that block (OCR, signing: pyHanko's ``sign_pdf`` runs its own event
loop) run in the thread pool, never on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.core.errors import (
    DossierNotFound,
    Forbidden,
    HosoError,
    InputError,
    InvalidRequest,
    InvalidState,
    UnknownProcedure,
)
from pipeline.usecases.desk import warm_up
from pipeline.usecases.services import Services
from pipeline.web.forms import BodyTooLarge
from pipeline.web.jobs import CitizenCopies, DeskJobs
from pipeline.web.pages import render
from pipeline.web.security import SESSION_COOKIE, RateLimiter, SessionStore, StaffSession

log = logging.getLogger(__name__)

#: Sign-in attempts per minute per client address (a centre's staff may share one address).
SIGNINS_PER_MINUTE = 30


@dataclass
class WebState:
    """What the routes share: the services, staff sessions, the lookup rate limit, desk jobs."""

    services: Services
    sessions: SessionStore
    lookups: RateLimiter
    signins: RateLimiter
    jobs: DeskJobs
    copies: CitizenCopies = field(default_factory=CitizenCopies)
    secure_cookies: bool = False

    def current_staff(self, request: Request) -> StaffSession | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE))


def http_status(err: HosoError) -> int:
    """The HTTP status of a use case's error."""
    if isinstance(err, Forbidden):
        return 403
    if isinstance(err, DossierNotFound | UnknownProcedure):
        return 404
    if isinstance(err, InvalidState):
        return 409
    if isinstance(err, BodyTooLarge):
        return 413
    if isinstance(err, InvalidRequest | InputError):
        return 400
    return 500


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path in ("/healthz", "/openapi.json")


def create_app(services: Services | None = None, *, lookup_rate: int | None = None, warm: bool = False) -> FastAPI:
    """The application. ``lookup_rate``: public lookups per minute per client (default: the settings');
    ``warm``: at start, run the desk chain once on the bundled sample (nothing recorded) so that the first
    intake finds the OCR workers, the classifier and the signer ready (``hoso serve`` does)."""
    services = services or Services()
    settings = services.settings

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        services.catalog  # noqa: B018  (``hoso serve`` ran services.preflight() before binding the port)
        if warm:
            sample = Path(str(resources.files("pipeline") / "data" / "sample_dossier.pdf"))
            state.jobs.warm(lambda: warm_up(services, sample))
        try:
            yield
        finally:
            state.jobs.shutdown()
            services.close()

    app = FastAPI(
        title="hoso — trung tâm phục vụ hành chính công",
        version="1",
        docs_url=None,  # Swagger UI would load its scripts from a CDN; the document is at /openapi.json
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    state = WebState(
        services=services,
        sessions=SessionStore(settings.session_hours * 3600),
        lookups=RateLimiter(lookup_rate or settings.lookup_rate),
        signins=RateLimiter(SIGNINS_PER_MINUTE),
        jobs=DeskJobs(services),
        secure_cookies=settings.public_url.startswith("https://"),
    )
    app.state.web = state
    app.mount("/static", StaticFiles(directory=str(resources.files("pipeline.web") / "static")), name="static")

    from pipeline.web import api, public, staff

    app.include_router(public.router)
    app.include_router(staff.router)
    app.include_router(api.router)

    @app.exception_handler(HosoError)
    async def _hoso_error(request: Request, err: HosoError) -> Response:
        status = http_status(err)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, err)
        if wants_json(request):
            return JSONResponse({"error": err.reason, "message_vi": err.message_vi, "message_en": str(err)},
                                status_code=status)
        return render(request, "error.html", status_code=status, message=err.message_vi, detail=str(err))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> Response:
        if err.status_code in (302, 303) and err.headers and "Location" in err.headers:  # sign in first
            return RedirectResponse(err.headers["Location"], status_code=err.status_code)
        if wants_json(request):
            return JSONResponse({"error": "http", "message_en": str(err.detail)}, status_code=err.status_code,
                                headers=err.headers)
        messages = {404: "Không tìm thấy trang.", 401: "Vui lòng đăng nhập.", 403: "Không có quyền truy cập.",
                    405: "Thao tác không được hỗ trợ."}
        return render(request, "error.html", status_code=err.status_code,
                      message=messages.get(err.status_code, "Yêu cầu không hợp lệ."), detail=str(err.detail))

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        """Liveness and the registry's reachability (nothing else is said)."""
        with services.registry.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return {"status": "ok"}

    return app
