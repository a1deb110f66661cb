"""Reference national-database service: population DB + citizens' electronic data stores over HTTP.

A stand-in for the national systems, backed by the registry database (tables ``natdb_*``) and seeded
with synthetic citizens. The pipeline reaches it through :class:`pipeline.national.db.HttpNationalDb`.

    python -m pipeline.national.service --host 127.0.0.1 --port 8700 --clients FILE [--database-url URL]
    python -m pipeline.national.service issue-token --client NAME --scope verify [--scope read …] --clients FILE

    GET  /health                                    {"status": "ok"}                        (no token)
    POST /v1/population/verify                      {id_number, full_name?, date_of_birth?} scope verify
    GET  /v1/citizens/{id}/documents?type=T&type=U   stored documents, newest first          scope read
    PUT  /v1/citizens/{id}/documents                save (or replace) one signed document    scope write

Every route but ``/health`` needs ``Authorization: Bearer <token>`` of a client in the clients file
(:mod:`pipeline.national.auth`): no or an unknown token is 401, a token without the route's scope 403,
both before the request body is read and with nothing of the data in the answer.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, get_args

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import Match

from pipeline.core.errors import ConfigurationError, HosoError
from pipeline.national.auth import Clients, Scope, add_client, load_clients
from pipeline.national.db import (
    ID_PATTERN,
    NationalDbUnavailable,
    RegistryNationalDb,
    StoredDocument,
    VerifyAnswer,
    VerifyRequest,
)

log = logging.getLogger(__name__)

IdNumber = Annotated[str, PathParam(pattern=ID_PATTERN.pattern, description="12-digit personal ID")]

#: The scope each route needs, by method and path template; a route missing here is refused at start.
ROUTE_SCOPES: dict[tuple[str, str], Scope] = {
    ("POST", "/v1/population/verify"): "verify",
    ("GET", "/v1/citizens/{id_number}/documents"): "read",
    ("PUT", "/v1/citizens/{id_number}/documents"): "write",
}
PUBLIC_ROUTES = frozenset({("GET", "/health")})


def _refusal(status: int, challenge: str, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers={"WWW-Authenticate": challenge})


def _route_of(app: FastAPI, request: Request) -> tuple[str, str] | None:
    """(method, path template) of the route this request reaches, None if no route has its method."""
    for route in app.router.routes:
        if isinstance(route, APIRoute):
            match, _ = route.matches(request.scope)
            if match == Match.FULL:
                return request.method, route.path
    return None


def create_app(db: RegistryNationalDb, clients: Clients) -> FastAPI:
    """The HTTP face of ``db``, for the clients in ``clients`` only."""
    app = FastAPI(title="hoso national databases (reference)", version="1", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.middleware("http")
    async def authorise(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Before routing and body parsing: an unauthenticated caller learns nothing, not even a 422.
        route = _route_of(app, request)
        if route in PUBLIC_ROUTES:
            return await call_next(request)
        client = clients.authenticate(request.headers.get("authorization"))
        peer = request.client.host if request.client else "?"
        if client is None:
            log.warning("refused %s %s from %s: no valid token", request.method, request.url.path, peer)
            if request.headers.get("authorization"):
                return _refusal(401, 'Bearer realm="hoso-natdb", error="invalid_token"', "invalid token")
            return _refusal(401, 'Bearer realm="hoso-natdb"', "authentication required")
        needed = ROUTE_SCOPES.get(route) if route else None  # None: no such route, a 404/405 follows
        if needed is not None and needed not in client.scopes:
            log.warning("refused %s %s to client %s: scope %s needed", request.method, request.url.path,
                        client.name, needed)
            return _refusal(403, f'Bearer realm="hoso-natdb", error="insufficient_scope", scope="{needed}"',
                            "insufficient scope")
        return await call_next(request)

    @app.get("/health")
    def health() -> JSONResponse:
        try:
            db.citizen_count()
        except NationalDbUnavailable:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.post("/v1/population/verify")
    def verify(request: VerifyRequest) -> VerifyAnswer:
        if not ID_PATTERN.match(request.id_number):
            raise HTTPException(422, "id_number must be 12 digits")
        return db.lookup(request.id_number, request.full_name, request.date_of_birth)

    @app.get("/v1/citizens/{id_number}/documents")
    def find_documents(
        id_number: IdNumber, doc_type: Annotated[list[str], Query(alias="type")]
    ) -> list[StoredDocument]:
        return db.find_documents(id_number, doc_type)

    @app.put("/v1/citizens/{id_number}/documents")
    def save_document(id_number: IdNumber, document: StoredDocument) -> StoredDocument:
        if document.id_number != id_number:
            raise HTTPException(422, "the document's id_number differs from the path's")
        return db.save_document(document)

    served = {(m, r.path) for r in app.router.routes if isinstance(r, APIRoute) for m in r.methods or ()}
    unguarded = served - set(ROUTE_SCOPES) - PUBLIC_ROUTES
    if unguarded:
        raise RuntimeError(f"routes without a scope: {sorted(unguarded)}")
    return app


def _issue_token(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.national.service issue-token",
        description="Add a client with a new token to the clients file; print the token (shown only once).",
    )
    parser.add_argument("--client", required=True, help="client name, e.g. worker")
    parser.add_argument("--scope", action="append", required=True, choices=get_args(Scope), dest="scopes")
    parser.add_argument("--clients", type=Path, required=True, help="clients file (created if missing)")
    args = parser.parse_args(argv)
    print(add_client(args.clients, args.client, args.scopes))
    return 0


def _serve(argv: list[str]) -> int:
    import uvicorn

    from pipeline.core.settings import Settings
    from storage.registry import Registry

    parser = argparse.ArgumentParser(prog="python -m pipeline.national.service", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: HOSO_DATABASE_URL / the registry's)")
    parser.add_argument("--clients", type=Path, help="clients file (default: HOSO_NATDB_CLIENTS_FILE)")
    args = parser.parse_args(argv)
    settings = Settings()
    clients_file = args.clients or settings.natdb_clients_file
    if clients_file is None:
        raise ConfigurationError(
            "the national-database service needs a clients file (--clients or HOSO_NATDB_CLIENTS_FILE); "
            "make one with: python -m pipeline.national.service issue-token --client NAME --scope verify "
            "--scope read --scope write --clients FILE",
            "Chưa cấu hình danh sách máy khách được phép truy cập dịch vụ cơ sở dữ liệu quốc gia.",
        )
    clients = load_clients(clients_file)
    db = RegistryNationalDb(Registry(args.database_url or settings.resolved_database_url))
    uvicorn.run(create_app(db, clients), host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Serve (default) or ``issue-token``; a configuration problem is one line on stderr and exit 17."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if argv[:1] == ["issue-token"]:
            return _issue_token(argv[1:])
        return _serve(argv)
    except HosoError as err:
        print(f"hoso natdb: lỗi [{err.reason}]: {err.message_vi} — {err}", file=sys.stderr)
        return int(err.exit_code)


if __name__ == "__main__":
    sys.exit(main())
