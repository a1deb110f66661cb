"""Reference national-database service: population DB + citizens' electronic data stores over HTTP.

A stand-in for the national systems, backed by the registry database (tables ``natdb_*``) and seeded
with synthetic citizens. The pipeline reaches it through :class:`pipeline.national.db.HttpNationalDb`.

    python -m pipeline.national.service --host 127.0.0.1 --port 8700 [--database-url URL]

    GET  /health                                   {"status": "ok", "citizens": N}
    POST /v1/population/verify                     {id_number, full_name?, date_of_birth?} → {outcome, mismatched}
    GET  /v1/citizens/{id}/documents?type=T&type=U  stored documents of those types, newest first
    PUT  /v1/citizens/{id}/documents               save (or replace) one signed digitised document
"""

from __future__ import annotations

import argparse
import sys
from typing import Annotated

from fastapi import FastAPI, HTTPException, Path, Query

from pipeline.national.db import ID_PATTERN, RegistryNationalDb, StoredDocument, VerifyAnswer, VerifyRequest

IdNumber = Annotated[str, Path(pattern=ID_PATTERN.pattern, description="12-digit personal ID")]


def create_app(db: RegistryNationalDb) -> FastAPI:
    """The HTTP face of ``db``."""
    app = FastAPI(title="hoso national databases (reference)", version="1")

    @app.get("/health")
    def health() -> dict[str, object]:
        return {"status": "ok", "citizens": db.citizen_count()}

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

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from pipeline.core.settings import Settings
    from storage.registry import Registry

    parser = argparse.ArgumentParser(prog="python -m pipeline.national.service", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: HOSO_DATABASE_URL / the registry's)")
    args = parser.parse_args(argv)
    url = args.database_url or Settings().resolved_database_url
    db = RegistryNationalDb(Registry(url))
    uvicorn.run(create_app(db), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
