"""The web application (``hoso serve``) through FastAPI's TestClient on the real registry, store and keys:
every route × every role (allowed / refused), sign-in and sessions, CSRF, the citizen's lookup secret,
rate limiting, the e-result's verify page and uploads, the handbook, corrections by hand."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pypdfium2 as pdfium
import pytest
from fastapi.testclient import TestClient
from support.cli import Hoso
from support.lifecycle import dossier_in, receive
from support.pdfs import decode_qr
from support.servers import free_ports

from pipeline.core.models import DocumentInfo, DossierState, Receipt, Role
from pipeline.core.settings import Settings
from pipeline.domain.lifecycle import load_lifecycle
from pipeline.domain.results import parse_verify_payload
from pipeline.usecases.services import Services
from pipeline.web.app import create_app
from pipeline.web.security import SESSION_COOKIE
from storage import keys
from storage.identity import Identity

S = DossierState
TZ = "Asia/Ho_Chi_Minh"
PUBLIC = "https://dichvucong.example.vn"
NOW = datetime.now(UTC).astimezone(ZoneInfo(TZ)).replace(microsecond=0)
PASSWORD = "mat-khau-du-dai-1"
#: One user per role, and one holding every role but admin.
USERS = {role: f"user-{role.value}" for role in Role}


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, public_url=PUBLIC, timezone=TZ, level_digitised="B-B", level_result="B-B")


@pytest.fixture(scope="session")
def web_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with the registry migrated, one user per role (scrypt at full cost) and the dev PKI, made
    once: each test works on its own copy."""
    data = tmp_path_factory.mktemp("web-data") / "var"
    s = Services(_settings(data))
    ident = Identity(s.registry)
    for role, name in USERS.items():
        ident.add_user(name, f"Cán bộ {role.value}", [role], PASSWORD)
    s.pki  # noqa: B018
    s.registry.close()
    return data


@pytest.fixture
def services(tmp_path: Path, web_data: Path) -> Iterator[Services]:
    shutil.copytree(web_data, tmp_path / "var")
    s = Services(_settings(tmp_path / "var"))
    yield s
    s.registry.close()


@pytest.fixture
def app(services: Services) -> Any:
    return create_app(services, lookup_rate=1000)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        yield c


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has no CSRF field"
    return match.group(1)


def sign_in(app: Any, role: Role) -> TestClient:
    """A client signed in as the user of ``role``."""
    c = TestClient(app, base_url="https://testserver", follow_redirects=False)
    form = c.get("/nhan-vien/dang-nhap")
    r = c.post("/nhan-vien/dang-nhap", data={"csrf_token": csrf_of(form.text), "username": USERS[role],
                                             "password": PASSWORD, "next": "/nhan-vien"})
    assert r.status_code == 303 and r.headers["location"] == "/nhan-vien", r.text
    return c


def token(services: Services, role: Role) -> dict[str, str]:
    value, _ = Identity(services.registry).issue_token(USERS[role], role)
    return {"Authorization": f"Bearer {value}"}


def page_csrf(c: TestClient, path: str) -> str:
    r = c.get(path)
    assert r.status_code == 200, r.text
    return csrf_of(r.text)


# --- service ------------------------------------------------------------------------------------


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    spec = client.get("/openapi.json").json()
    assert "/api/lookup/{code}" in spec["paths"] and "/api/dossiers/{code}/steps/{action}" in spec["paths"]
    assert not any(p.startswith("/nhan-vien") for p in spec["paths"])  # pages are not part of the API
    assert client.get("/docs").status_code == 404  # Swagger UI would load scripts from a CDN


PUBLIC_API = {"/api/procedures", "/api/procedures/{key}", "/api/lookup/{code}", "/api/results/{code}", "/api/verify"}


def _api_routes(app: Any) -> list[tuple[str, str]]:
    return [(m.upper(), path) for path, ops in app.openapi()["paths"].items() if path.startswith("/api/")
            for m in ops]


def test_every_private_api_route_needs_a_valid_token(app: Any, client: TestClient, services: Services) -> None:
    private = [(m, p) for m, p in _api_routes(app) if p not in PUBLIC_API]
    assert len(private) >= 9
    fill = {"{code}": "000.00.00.H00-250101-0001", "{action}": "forward", "{job_id}": "x", "{key}": "x"}
    revoked_value, record = Identity(services.registry).issue_token(USERS[Role.desk], Role.desk)
    Identity(services.registry).revoke_token(record.id)
    for method, path in private:
        url = path
        for k, v in fill.items():
            url = url.replace(k, v)
        for headers in ({}, {"Authorization": "Bearer hoso_not-a-token"}, {"Authorization": "Basic eDp5"},
                        {"Authorization": f"Bearer {revoked_value}"}):
            r = client.request(method, url, headers=headers, params={"start": "2025-01-01", "end": "2025-01-31",
                                                                    "procedure": "birth_registration"})
            assert r.status_code == 401, (method, url, headers, r.status_code)
            assert r.headers.get("www-authenticate") == "Bearer"


def test_api_routes_by_role(app: Any, client: TestClient, services: Services) -> None:
    """Each staff API route with a token of each role: allowed (2xx, or the use case's own 4xx) or 403."""
    code = dossier_in(services, S.received, NOW - timedelta(hours=1))
    everyone = set(Role)
    table: list[tuple[str, str, dict[str, Any], set[Role]]] = [
        ("GET", "/api/me", {}, everyone),
        ("GET", "/api/worklist", {}, everyone),
        ("GET", "/api/due-soon", {}, everyone),
        ("GET", "/api/overdue", {}, everyone),
        ("GET", f"/api/dossiers/{code}", {}, everyone),
        ("GET", "/api/stats", {"params": {"start": "2025-01-01", "end": "2025-12-31"}}, everyone),
        ("POST", "/api/ingest", {"params": {"procedure": "birth_registration"}, "content": b""}, {Role.desk}),
        ("GET", "/api/jobs/unknown", {}, {Role.desk}),
        ("POST", "/api/desk/intake", {"data": {"procedure": "birth_registration"}}, {Role.desk}),
        ("GET", "/api/jobs/unknown/citizen-form.pdf", {}, {Role.desk}),
        ("GET", f"/api/dossiers/{code}/digitised.pdf", {}, everyone),
    ]
    for method, url, kw, allowed in table:
        for role in Role:
            r = client.request(method, url, headers=token(services, role), **kw)
            if role in allowed:
                assert r.status_code != 403 and r.status_code < 500, (url, role, r.text)
            else:
                assert r.status_code == 403, (url, role, r.status_code)
                assert set(r.json()) == {"error", "message_vi", "message_en"}


@pytest.mark.parametrize("action", ["forward", *(pytest.param(a, marks=pytest.mark.slow)
                                                for a in ("appraise", "approve", "seal", "return"))])
def test_api_steps_by_role(client: TestClient, services: Services, action: str) -> None:
    """A step through the API: every role the lifecycle does not allow is refused (403, nothing changes);
    an allowed role takes it from the right state."""
    t = load_lifecycle().transition(action)
    before_state = {"forward": S.received, "appraise": S.appraisal, "approve": S.approval, "seal": S.sealing,
                    "return": S.result_ready}[action]
    code = dossier_in(services, before_state, NOW - timedelta(hours=2))
    body = {"note": "Hồ sơ đủ điều kiện", "channel": "post", "tracking": "EL123456789VN"}
    for role in Role:
        if role in t.roles:
            continue
        r = client.post(f"/api/dossiers/{code}/steps/{action}", json=body, headers=token(services, role))
        assert r.status_code == 403, (role, r.text)
        assert services.registry.get(code).state == before_state
    role = t.roles[0]
    r = client.post(f"/api/dossiers/{code}/steps/{action}", json=body, headers=token(services, role))
    assert r.status_code == 200, r.text
    assert r.json()["state"] == t.to[0].value and r.json()["role"] == role.value
    event = services.registry.get(code).events[-1]
    assert (event.actor, event.role, event.action) == (USERS[role], role, action)
    again = client.post(f"/api/dossiers/{code}/steps/{action}", json=body, headers=token(services, role))
    assert again.status_code == 409  # not from this state any more


# --- pages: sign-in, roles, CSRF ----------------------------------------------------------------


def test_sign_in_sets_a_strict_httponly_session_and_refuses_wrong_passwords(app: Any) -> None:
    c = TestClient(app, base_url="https://testserver", follow_redirects=False)
    csrf = page_csrf(c, "/nhan-vien/dang-nhap")
    wrong = c.post("/nhan-vien/dang-nhap", data={"csrf_token": csrf, "username": USERS[Role.desk],
                                                 "password": "not-the-password"})
    assert wrong.status_code == 401 and "Sai tên đăng nhập hoặc mật khẩu" in wrong.text
    assert SESSION_COOKIE not in wrong.cookies
    no_csrf = c.post("/nhan-vien/dang-nhap", data={"username": USERS[Role.desk], "password": PASSWORD})
    assert no_csrf.status_code == 403 and SESSION_COOKIE not in no_csrf.cookies
    ok = c.post("/nhan-vien/dang-nhap", data={"csrf_token": csrf, "username": USERS[Role.desk], "password": PASSWORD,
                                              "next": "https://evil.example/"})
    assert ok.status_code == 303 and ok.headers["location"] == "/nhan-vien"  # no open redirect
    cookie = next(h for h in ok.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert c.get("/nhan-vien").status_code == 200
    out = c.post("/nhan-vien/dang-xuat", data={"csrf_token": page_csrf(c, "/nhan-vien")})
    assert out.status_code == 303
    assert c.get("/nhan-vien").status_code == 303  # the session is gone server-side


@pytest.mark.slow
def test_staff_pages_by_role(app: Any, services: Services, client: TestClient) -> None:
    code = dossier_in(services, S.received, NOW - timedelta(hours=1))
    pages = {
        "/nhan-vien": set(Role),
        "/nhan-vien/tiep-nhan": {Role.desk},
        f"/nhan-vien/ho-so/{code}": set(Role),
        "/nhan-vien/thong-ke": set(Role),
        "/nhan-vien/quan-tri/nguoi-dung": {Role.admin},
    }
    for path in pages:
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/nhan-vien/dang-nhap?next=")
    for role in Role:
        c = sign_in(app, role)
        for path, allowed in pages.items():
            assert c.get(path).status_code == (200 if role in allowed else 403), (path, role)


def test_the_admin_page_manages_users_and_refuses_everyone_else(app: Any, services: Services) -> None:
    """Every admin route × every role (403 but for admin), CSRF on each form; an added user's password is
    hashed and signs in; roles change at once; a locked user cannot sign in and is unlocked again; the admin
    cannot lock themself out."""
    base = "/nhan-vien/quan-tri/nguoi-dung"
    new_user = {"username": "hoa", "display_name": "Phạm Thị Hoa", "roles": ["desk"], "password": "mat-khau-moi-123"}
    posts = {base: new_user, f"{base}/{USERS[Role.desk]}/vai-tro": {"roles": ["desk", "clerk"]},
             f"{base}/{USERS[Role.desk]}/khoa": {}, f"{base}/{USERS[Role.desk]}/mo-khoa": {}}
    for role in set(Role) - {Role.admin}:
        c = sign_in(app, role)
        csrf = page_csrf(c, "/nhan-vien")
        assert c.get(base).status_code == 403
        for path, data in posts.items():
            assert c.post(path, data={"csrf_token": csrf, **data}).status_code == 403, (role, path)
    assert Identity(services.registry).user("hoa") is None
    assert Identity(services.registry).user(USERS[Role.desk]).roles == [Role.desk]  # type: ignore[union-attr]
    admin = sign_in(app, Role.admin)
    page = admin.get(base)
    assert page.status_code == 200 and 'id="add-user"' in page.text and f'id="user-{USERS[Role.desk]}"' in page.text
    csrf = csrf_of(page.text)
    for bad in ({}, {"csrf_token": "forged"}):
        assert admin.post(base, data={**bad, **new_user}).status_code == 403
    r = admin.post(base, data={"csrf_token": csrf, **new_user})
    assert r.status_code == 303 and r.headers["location"] == f"{base}?done=hoa", r.text
    with services.registry.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT password_hash FROM users WHERE username = 'hoa'").scalar_one()
    assert stored.startswith("scrypt$") and new_user["password"] not in stored
    hoa = TestClient(app, base_url="https://testserver", follow_redirects=False)
    signin = hoa.post("/nhan-vien/dang-nhap", data={"csrf_token": csrf_of(hoa.get("/nhan-vien/dang-nhap").text),
                                                   "username": "hoa", "password": new_user["password"]})
    assert signin.status_code == 303 and hoa.get("/nhan-vien/tiep-nhan").status_code == 200
    assert admin.post(base, data={"csrf_token": csrf, **new_user}).status_code == 409  # the name is taken
    assert admin.post(base, data={"csrf_token": csrf, **new_user, "username": "ngan", "password": "ngan"}
                      ).status_code == 400  # too short
    r = admin.post(f"{base}/hoa/vai-tro", data={"csrf_token": csrf, "roles": ["specialist"]})
    assert r.status_code == 303 and hoa.get("/nhan-vien/tiep-nhan").status_code == 403  # at once
    assert admin.post(f"{base}/hoa/khoa", data={"csrf_token": csrf}).status_code == 303
    assert hoa.get("/nhan-vien").status_code == 303  # signed out at once
    locked = TestClient(app, base_url="https://testserver", follow_redirects=False)
    again = locked.post("/nhan-vien/dang-nhap", data={"csrf_token": csrf_of(locked.get("/nhan-vien/dang-nhap").text),
                                                     "username": "hoa", "password": new_user["password"]})
    assert again.status_code == 401
    assert "Đã khóa" in admin.get(base).text
    assert admin.post(f"{base}/hoa/mo-khoa", data={"csrf_token": csrf}).status_code == 303
    assert Identity(services.registry).user("hoa").active  # type: ignore[union-attr]
    me = USERS[Role.admin]
    assert admin.post(f"{base}/{me}/khoa", data={"csrf_token": csrf}).status_code == 400
    assert admin.post(f"{base}/{me}/vai-tro", data={"csrf_token": csrf, "roles": ["desk"]}).status_code == 400
    assert admin.post(f"{base}/{me}/xoa", data={"csrf_token": csrf}).status_code == 404
    assert Identity(services.registry).user(me).active  # type: ignore[union-attr]


def test_a_disabled_user_is_signed_out_at_once(app: Any, services: Services) -> None:
    c = sign_in(app, Role.desk)
    Identity(services.registry).set_active(USERS[Role.desk], False)
    assert c.get("/nhan-vien").status_code == 303


@pytest.mark.parametrize("action", ["forward", *(pytest.param(a, marks=pytest.mark.slow)
                                                for a in ("appraise", "approve", "seal"))])
def test_step_forms_by_role_and_csrf(app: Any, services: Services, action: str) -> None:
    t = load_lifecycle().transition(action)
    state = t.sources[0]
    code = dossier_in(services, state, NOW - timedelta(hours=2))
    url = f"/nhan-vien/ho-so/{code}/buoc/{action}"
    for role in Role:
        c = sign_in(app, role)
        csrf = page_csrf(c, f"/nhan-vien/ho-so/{code}")
        if role not in t.roles:
            assert c.post(url, data={"csrf_token": csrf, "note": "x"}).status_code == 403
            assert services.registry.get(code).state == state
    c = sign_in(app, t.roles[0])
    page = c.get(f"/nhan-vien/ho-so/{code}").text
    assert f'id="step-{action}"' in page
    for bad in ({}, {"csrf_token": "forged"}):
        r = c.post(url, data={**bad, "note": "Hồ sơ đủ điều kiện"})
        assert r.status_code == 403
        assert services.registry.get(code).state == state
    r = c.post(url, data={"csrf_token": csrf_of(page), "note": "Hồ sơ đủ điều kiện"})
    assert r.status_code == 303, r.text
    assert services.registry.get(code).state == t.to[0]
    assert services.registry.get(code).events[-1].actor == USERS[t.roles[0]]


@pytest.mark.slow
def test_whole_path_through_the_pages_then_the_citizen_sees_the_tracking_number(app: Any, services: Services,
                                                                                client: TestClient) -> None:
    code, form = receive(services, NOW - timedelta(hours=3))
    assert form is not None and form.lookup_url
    path = [("forward", Role.desk, {}), ("appraise", Role.specialist, {"note": "Đủ điều kiện"}),
            ("approve", Role.approver, {}), ("seal", Role.clerk, {}),
            ("return", Role.desk, {"channel": "post", "tracking": "EL123456789VN"})]
    for action, role, data in path:
        c = sign_in(app, role)
        csrf = page_csrf(c, f"/nhan-vien/ho-so/{code}")
        r = c.post(f"/nhan-vien/ho-so/{code}/buoc/{action}", data={"csrf_token": csrf, **data})
        assert r.status_code == 303, (action, r.text)
    assert services.registry.get(code).state == S.returned
    url = urlsplit(form.lookup_url)
    r = client.get(f"{url.path}?{url.query}")
    assert r.status_code == 200
    assert "Đã trả kết quả" in r.text and "EL123456789VN" in r.text and "bưu chính" in r.text


def test_a_supplement_at_intake_gives_the_desk_the_new_receipt_to_print(app: Any, services: Services) -> None:
    """Supplemented at the desk page: the new Mẫu 01 (new appointment) is stored, the page shows the new
    appointment and a link to the citizen's copy — for the user who took the step only."""
    code, _ = receive(services, NOW - timedelta(days=3), status="needs_supplement")
    before = services.registry.get(code).due_at
    c = sign_in(app, Role.desk)
    csrf = page_csrf(c, f"/nhan-vien/ho-so/{code}")
    r = c.post(f"/nhan-vien/ho-so/{code}/buoc/supplemented", data={"csrf_token": csrf, "note": "Đã nộp đủ"})
    assert r.status_code == 303 and r.headers["location"].endswith("done=supplemented&copy=form-01-1"), r.headers
    record = services.registry.get(code)
    assert record.state == S.received and "form-01-1" in record.artifacts
    new_due = datetime.fromisoformat(record.events[-1].detail["new_due_at"])
    assert new_due > before
    page = c.get(r.headers["location"]).text
    assert f"{new_due.astimezone(ZoneInfo(TZ)):%d/%m/%Y}" in page and 'id="handout"' in page
    assert 'id="missing"' not in page  # supplemented: nothing listed as missing any more
    link = re.search(r'href="(/nhan-vien/ho-so/[^"]+/ban-cong-dan/form-01-1\.pdf)"', page)
    assert link, page
    pdf = c.get(link.group(1))
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.content != services.store.get_bytes(record.artifacts["form-01-1"].object_key)  # the citizen's
    other = sign_in(app, Role.specialist)
    assert other.get(link.group(1)).status_code == 404  # not the user who took the step


@pytest.mark.slow
def test_a_wrong_return_is_a_clear_error_not_a_crash(app: Any, services: Services) -> None:
    code = dossier_in(services, S.result_ready, NOW - timedelta(hours=2))
    c = sign_in(app, Role.desk)
    csrf = page_csrf(c, f"/nhan-vien/ho-so/{code}")
    r = c.post(f"/nhan-vien/ho-so/{code}/buoc/return", data={"csrf_token": csrf, "channel": "post"})
    assert r.status_code == 400 and "mã bưu gửi" in r.text
    assert services.registry.get(code).state == S.result_ready


# --- the citizen's lookup -----------------------------------------------------------------------


def test_lookup_needs_the_secret_and_says_the_same_for_unknown_codes(services: Services, client: TestClient) -> None:
    code, form = receive(services, NOW - timedelta(hours=1), status="needs_supplement")
    assert form is not None and form.lookup_url and form.lookup_url.startswith(f"{PUBLIC}/tra-cuu/{code}?s=")
    url = urlsplit(form.lookup_url)
    ok = client.get(f"{url.path}?{url.query}")
    assert ok.status_code == 200
    assert "Chờ công dân bổ sung hồ sơ" in ok.text and "Giấy đề nghị đăng ký hộ kinh doanh" in ok.text
    secret = dict(p.split("=", 1) for p in url.query.split("&"))["s"]
    wrong = client.get(f"/tra-cuu/{code}", params={"s": secret[:-1] + ("A" if secret[-1] != "A" else "B")})
    unknown = client.get(f"/tra-cuu/{code[:-4]}9999", params={"s": secret})
    empty = client.get(f"/tra-cuu/{code}", params={"s": ""})
    assert wrong.status_code == unknown.status_code == 404
    assert wrong.text == unknown.text
    for r in (wrong, unknown, empty):
        assert "Chờ công dân bổ sung" not in r.text and "hộ kinh doanh" not in r.text
    assert code not in wrong.text
    assert "hỏi tại quầy" in wrong.text
    api_ok = client.get(f"/api/lookup/{code}", headers={"X-Lookup-Secret": secret})
    assert api_ok.status_code == 200 and api_ok.json()["status"]["state"] == "needs_supplement"
    api_wrong = client.get(f"/api/lookup/{code}", params={"s": "nope"})
    api_unknown = client.get(f"/api/lookup/{code[:-4]}9999", params={"s": secret})
    assert api_wrong.status_code == api_unknown.status_code == 404 and api_wrong.json() == api_unknown.json()


def test_lookups_are_rate_limited_per_client(services: Services) -> None:
    app = create_app(services, lookup_rate=3)
    code, form = receive(services, NOW - timedelta(hours=1))
    assert form is not None and form.lookup_url
    url = urlsplit(form.lookup_url)
    c = TestClient(app, base_url="https://testserver", client=("192.0.2.10", 4000))
    for _ in range(3):
        assert c.get(f"{url.path}?{url.query}").status_code == 200
    limited = c.get(f"{url.path}?{url.query}")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert "Quá nhiều lượt tra cứu" in limited.text and "Đã tiếp nhận" not in limited.text
    assert c.get(f"/api/lookup/{code}", params={"s": "x"}).status_code == 429
    assert c.get("/thu-tuc").status_code == 200  # the handbook is not limited
    other = TestClient(app, base_url="https://testserver", client=("192.0.2.11", 4000))
    assert other.get(f"{url.path}?{url.query}").status_code == 200


# --- e-results ----------------------------------------------------------------------------------


def last_page(pdf: bytes) -> int:
    doc = pdfium.PdfDocument(pdf)
    try:
        return len(doc) - 1
    finally:
        doc.close()


def _returned_with_result(services: Services) -> tuple[str, bytes]:
    code = dossier_in(services, S.returned, NOW - timedelta(hours=2))
    art = services.registry.get(code).artifacts[keys.RESULT]
    return code, services.store.get_bytes(art.object_key)


@pytest.mark.slow
def test_the_result_qr_lands_on_the_verify_page(services: Services, client: TestClient) -> None:
    code, pdf = _returned_with_result(services)
    (payload,) = [q for q in decode_qr(pdf, last_page(pdf)) if "/xac-thuc/" in q]
    assert payload.startswith(f"{PUBLIC}/xac-thuc/{code}?v=")
    url = urlsplit(payload)
    r = client.get(f"{url.path}?{url.query}")
    assert r.status_code == 200 and "Hợp lệ" in r.text and code in r.text
    vcode = url.query.split("v=")[1]
    old = client.get("/xac-thuc", params={"q": f"HOSO-VERIFY:{code}:{vcode}"})  # results issued before
    assert old.status_code == 303 and old.headers["location"] == f"/xac-thuc/{code}?v={vcode}"
    wrong = client.get(f"/xac-thuc/{code}", params={"v": "0000000000"})
    assert wrong.status_code == 404 and "Hợp lệ" not in wrong.text
    api = client.get(f"/api/results/{code}", params={"v": vcode})
    assert api.status_code == 200 and api.json()["report"]["ok"] is True


@pytest.mark.slow
def test_uploaded_pdfs_are_checked_not_stored(services: Services, client: TestClient) -> None:
    _, pdf = _returned_with_result(services)
    stored_before = sorted(i.key for i in services.store.list())
    csrf = page_csrf(client, "/xac-thuc")
    ok = client.post("/xac-thuc", data={"csrf_token": csrf}, files={"file": ("ket-qua.pdf", pdf, "application/pdf")})
    assert ok.status_code == 200 and 'class="card verdict ok"' in ok.text
    tampered = pdf.replace(b"/Producer", b"/Pxoducer", 1) if b"/Producer" in pdf else pdf + b"%tampered\n"
    bad = client.post("/xac-thuc", data={"csrf_token": csrf}, files={"file": ("x.pdf", tampered, "application/pdf")})
    assert bad.status_code == 200 and 'class="card verdict bad"' in bad.text
    garbage = client.post("/xac-thuc", data={"csrf_token": csrf}, files={"file": ("x.pdf", b"not a pdf", "x/y")})
    assert garbage.status_code in (200, 400) and "Không hợp lệ" in garbage.text or garbage.status_code == 400
    no_csrf = client.post("/xac-thuc", files={"file": ("x.pdf", pdf, "application/pdf")})
    assert no_csrf.status_code == 403
    api = client.post("/api/verify", content=pdf, headers={"Content-Type": "application/pdf"})
    assert api.status_code == 200 and api.json()["ok"] is True
    assert sorted(i.key for i in services.store.list()) == stored_before


def test_uploads_over_the_cap_are_refused(tmp_path: Path) -> None:
    s = Services(Settings(data_dir=tmp_path / "var", verify_max_mb=1))
    c = TestClient(create_app(s), follow_redirects=False)
    big = b"%PDF-1.7\n" + b"0" * 1_100_000
    assert c.post("/api/verify", content=big).status_code == 413
    csrf = page_csrf(c, "/xac-thuc")
    r = c.post("/xac-thuc", data={"csrf_token": csrf}, files={"file": ("big.pdf", big, "application/pdf")})
    assert r.status_code == 413 and "vượt quá giới hạn" in r.text


# --- handbook, kiosk, language ------------------------------------------------------------------


@pytest.mark.parametrize("query", ["khai sinh", "KHAI SINH", "đăng ký khai sinh", "dang ky khai sinh", "1.001193"])
def test_handbook_search_ignores_case_and_diacritics(client: TestClient, query: str) -> None:
    r = client.get("/thu-tuc", params={"q": query})
    assert r.status_code == 200 and "Đăng ký khai sinh" in r.text and "1.001193" in r.text
    assert "Giấy chứng sinh" in r.text or "giấy chứng sinh" in r.text.lower()
    api = client.get("/api/procedures", params={"q": query}).json()
    assert api[0]["key"] == "birth_registration"


def test_handbook_shows_fee_status_steps_and_nothing_for_nonsense(client: TestClient) -> None:
    r = client.get("/thu-tuc/birth_registration")
    assert "tùy trường hợp" in r.text and "Thẩm định" in r.text and "Trả kết quả" in r.text
    none = client.get("/thu-tuc", params={"q": "zzzz không có"})
    assert "Không tìm thấy thủ tục phù hợp" in none.text
    assert client.get("/thu-tuc/no_such_procedure").status_code == 404


def test_kiosk_and_english(client: TestClient) -> None:
    kiosk = client.get("/kiosk/thu-tuc", params={"q": "khai sinh"})
    assert 'class="kiosk"' in kiosk.text and 'action="/kiosk/thu-tuc"' in kiosk.text
    en = client.get("/tra-cuu", params={"lang": "en"})
    assert "Look up a dossier" in en.text and en.cookies.get("hoso_lang") == "en"
    assert "Look up a dossier" in client.get("/tra-cuu").text  # remembered
    assert "Tra cứu hồ sơ" in client.get("/tra-cuu", params={"lang": "vi"}).text


def test_staff_pages_in_english_with_the_same_toggle(app: Any, services: Services) -> None:
    """The staff pages' text and the lifecycle's labels (English ones from lifecycle.yaml) follow ``?lang=``,
    remembered like the citizen pages'; Vietnamese stays the default."""
    code = _dossier_with_documents(services)
    c = sign_in(app, Role.desk)
    vi = c.get("/nhan-vien").text
    assert "Việc cần làm" in vi and "Quá hạn" in vi and 'hreflang="en"' in vi
    en = c.get("/nhan-vien", params={"lang": "en"})
    assert "Work queues" in en.text and "Overdue" in en.text and "Due within one working day" in en.text
    assert "Desk officer" in en.text and "Việc cần làm" not in en.text
    page = c.get(f"/nhan-vien/ho-so/{code}").text  # remembered
    assert "Audit trail" in page and "Documents in the dossier" in page
    assert ">Waiting for the citizen to supplement<" in page
    assert ">Supplement received</button>" in page and "Nhận hồ sơ bổ sung" not in page
    assert "Receive a dossier" in c.get("/nhan-vien/tiep-nhan").text
    assert "Decision 766 indicators" in c.get("/nhan-vien/thong-ke").text
    back = c.get(f"/nhan-vien/ho-so/{code}", params={"lang": "vi"}).text
    assert "Nhật ký xử lý" in back and ">Nhận hồ sơ bổ sung</button>" in back


def test_statistics_rows_and_the_audit_trails_other_actions_in_english(app: Any, services: Services) -> None:
    """The indicator rows and the chart (pipeline/data/indicators.yaml), and the audit trail's actions that are no
    step — the code's reservation, the intake — (lifecycle.yaml ``actions``) follow ``?lang=`` too."""
    code = _dossier_with_documents(services)
    assert [e.action for e in services.registry.get(code).events] == ["reserve", "intake"]
    c = sign_in(app, Role.desk)
    period = {"start": (NOW.date() - timedelta(days=1)).isoformat(), "end": NOW.date().isoformat()}
    en = c.get("/nhan-vien/thong-ke", params=period | {"lang": "en"}).text
    assert "<td>Dossiers digitised (4.2)</td>" in en and "<td>Dossiers settled early or on time (2.1)</td>" in en
    assert "<title>Decision 766 indicators</title>" in en and ">Reused data</text>" in en
    assert "Tỷ lệ" not in en and "Số hóa hồ sơ" not in en
    page = c.get(f"/nhan-vien/ho-so/{code}").text  # remembered
    history = page[page.index('id="history"'):]
    assert "<td>Dossier code reserved (intake under way)</td>" in history
    assert "<td>Dossier received: digitised, checked, signed</td>" in history
    assert "<td>reserve</td>" not in history and "<td>intake</td>" not in history
    vi = c.get(f"/nhan-vien/ho-so/{code}", params={"lang": "vi"}).text
    assert "<td>Tiếp nhận hồ sơ: số hóa, kiểm tra, ký số</td>" in vi
    assert "<td>Tỷ lệ hồ sơ thực hiện số hóa (4.2)</td>" in c.get("/nhan-vien/thong-ke", params=period).text


def test_every_action_of_the_audit_trail_has_its_labels() -> None:
    """The actions the registry and the use cases record besides the steps, each labelled in both languages."""
    lc = load_lifecycle()
    recorded = {"reserve", "intake_resumed", "intake", "handover", "intake_forms", "correct", "signatures_refreshed"}
    assert recorded <= set(lc.actions) and not set(lc.actions) & set(lc.transitions)
    for action in recorded | set(lc.transitions):
        assert lc.step_label(action, "en") not in (action, lc.step_label(action, "vi")), action
    assert lc.step_label("no_such_action", "en") == "no_such_action"


# --- corrections, statistics, desk jobs ---------------------------------------------------------


def _dossier_with_documents(services: Services) -> str:
    registry = services.registry
    at = NOW - timedelta(hours=1)
    rec = registry.reserve(input_sha256="ab" * 32, input_name="scan.pdf", procedure="business_household_registration",
                           procedure_code=None, agency_code=services.settings.agency_code, received_at=at,
                           due_at=at + timedelta(days=5), applicant_id=None, actor="lan")
    docs = [DocumentInfo(type="unknown", pages=[1], confidence=0.3, fields={}),
            DocumentInfo(type="cccd", pages=[2], confidence=0.9, fields={"full_name": "NGUYEN VAN A"})]
    procedure = services.catalog.procedure("business_household_registration")
    receipt = Receipt(dossier_code=rec.code, procedure=procedure.key, status="needs_supplement", received_at=at,
                      due_at=at + timedelta(days=5), pages=[], documents=docs, missing=procedure.required,
                      unexpected=[])
    registry.finalize_intake(rec.code, state=S.needs_supplement, intake_status="needs_supplement", documents=docs,
                             artifacts=[], receipt=receipt.model_dump(mode="json"), actor="lan", at=at)
    return rec.code


@pytest.mark.slow
def test_correcting_a_document_by_hand_revalidates_and_is_audited(app: Any, services: Services) -> None:
    code = _dossier_with_documents(services)
    before = services.registry.get(code).receipt_json
    assert before and ["giay_de_nghi_dang_ky_ho_kinh_doanh"] in before["missing"]
    for role in (Role.approver, Role.clerk, Role.admin):
        c = sign_in(app, role)
        csrf = page_csrf(c, f"/nhan-vien/ho-so/{code}")
        r = c.post(f"/nhan-vien/ho-so/{code}/sua", data={"csrf_token": csrf, "position": "0",
                                                        "doc_type": "giay_de_nghi_dang_ky_ho_kinh_doanh"})
        assert r.status_code == 403
    c = sign_in(app, Role.desk)
    csrf = page_csrf(c, f"/nhan-vien/ho-so/{code}")
    r = c.post(f"/nhan-vien/ho-so/{code}/sua", data={"csrf_token": csrf, "position": "0",
                                                    "doc_type": "giay_de_nghi_dang_ky_ho_kinh_doanh"})
    assert r.status_code == 303, r.text
    r = c.post(f"/nhan-vien/ho-so/{code}/sua", data={"csrf_token": csrf, "position": "1", "field": "full_name",
                                                    "value": "NGUYỄN VĂN A", "note": "Đọc sai dấu"})
    assert r.status_code == 303, r.text
    record = services.registry.get(code)
    after = record.receipt_json
    assert after is not None
    assert ["giay_de_nghi_dang_ky_ho_kinh_doanh"] not in after["missing"]
    assert after["documents"][0]["type"] == "giay_de_nghi_dang_ky_ho_kinh_doanh"
    assert after["documents"][1]["fields"]["full_name"] == "NGUYỄN VĂN A"
    assert record.documents[1].fields["full_name"] == "NGUYỄN VĂN A"
    corrections = [e for e in record.events if e.action == "correct"]
    assert [e.actor for e in corrections] == [USERS[Role.desk]] * 2 and corrections[-1].note == "Đọc sai dấu"
    assert corrections[0].detail and corrections[0].detail["before"]["type"] == "unknown"
    assert record.state == S.needs_supplement
    page = c.get(f"/nhan-vien/ho-so/{code}").text
    assert "NGUYỄN VĂN A" in page and ">Sửa thông tin giấy tờ<" in page
    bad = c.post(f"/nhan-vien/ho-so/{code}/sua", data={"csrf_token": csrf, "position": "7", "doc_type": "cccd"})
    assert bad.status_code == 400


@pytest.mark.slow
def test_statistics_page_has_the_indicators_and_a_chart(app: Any, services: Services) -> None:
    dossier_in(services, S.returned, NOW - timedelta(hours=3))
    c = sign_in(app, Role.approver)
    day, yesterday = NOW.date().isoformat(), (NOW.date() - timedelta(days=1)).isoformat()
    r = c.get("/nhan-vien/thong-ke", params={"start": yesterday, "end": day})
    assert r.status_code == 200 and "<svg" in r.text and "Kết quả điện tử" in r.text
    assert "Hồ sơ tiếp nhận: 1" in r.text
    assert c.get("/nhan-vien/thong-ke", params={"start": day, "end": "2000-01-01"}).status_code == 400
    assert c.get("/nhan-vien/thong-ke", params={"start": "not-a-day"}).status_code == 400


def test_a_desk_upload_that_is_not_a_scan_fails_clearly(app: Any, services: Services) -> None:
    c = sign_in(app, Role.desk)
    csrf = page_csrf(c, "/nhan-vien/tiep-nhan")
    r = c.post("/nhan-vien/tiep-nhan", data={"csrf_token": csrf, "procedure": "birth_registration"},
               files={"scan": ("scan.pdf", b"%PDF-1.7\nnot really", "application/pdf")})
    assert r.status_code == 303
    job_url = r.headers["location"]
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    status: dict[str, Any] = {}
    while datetime.now(UTC) < deadline:
        status = c.get(f"{job_url}/trang-thai").json()
        if status["status"] in ("done", "failed"):
            break
    assert status["status"] == "failed" and status["error"]["message_vi"]
    assert sign_in(app, Role.approver).get(job_url).status_code == 403
    other_desk = c.post("/nhan-vien/tiep-nhan", data={"csrf_token": csrf, "procedure": "no_such_procedure"},
                        files={"scan": ("scan.pdf", b"x", "application/pdf")})
    assert other_desk.status_code == 404


@pytest.mark.slow
def test_serve_refuses_production_settings_before_binding(tmp_path: Path) -> None:
    (port,) = free_ports(1, with_grpc=False)
    run = Hoso(tmp_path / "var", {"HOSO_MODE": "production"})("serve", "--port", str(port), timeout=60)
    assert run.returncode == 17
    assert run.stderr.startswith("hoso: lỗi [configuration]:") and len(run.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_desk_ingest_through_the_api_gives_the_receipt_and_the_lookup_link(tmp_path: Path) -> None:
    """The desk chain in the background (scripted OCR: the sample's text, everything else real)."""
    s = Services(Settings(data_dir=tmp_path / "var", public_url=PUBLIC, level_digitised="B-B", level_result="B-B",
                          ocr_engine="support.fake_ocr:ScriptedEngine", ocr_jobs=1))
    Identity(s.registry).add_user("lan", "Lan", [Role.desk], PASSWORD)
    desk, _ = Identity(s.registry).issue_token("lan", Role.desk)
    headers = {"Authorization": f"Bearer {desk}"}
    sample = Path(__file__).resolve().parents[1] / "pipeline" / "data" / "sample_dossier.pdf"
    with TestClient(create_app(s), base_url="https://testserver") as c:
        r = c.post("/api/ingest", params={"procedure": "business_household_registration"},
                   content=sample.read_bytes(), headers=headers)
        assert r.status_code == 202, r.text
        job: dict[str, Any] = r.json()
        deadline = datetime.now(UTC) + timedelta(seconds=120)
        while job["status"] not in ("done", "failed") and datetime.now(UTC) < deadline:
            job = c.get(f"/api/jobs/{job['id']}", headers=headers).json()
        assert job["status"] == "done", job
        code = job["dossier_code"]
        assert job["receipt"]["status"] == "accepted" and job["receipt"]["dossier_code"] == code
        assert job["lookup_url"].startswith(f"{PUBLIC}/tra-cuu/{code}?s=")
        url = urlsplit(job["lookup_url"])
        assert "Đã tiếp nhận" in c.get(f"{url.path}?{url.query}").text
        event = next(e for e in s.registry.get(code).events if e.action == "intake_forms")
        assert (event.actor, event.role) == ("lan", Role.desk)
    s.close()


@pytest.mark.parametrize(("text", "expected"), [
    (f"{PUBLIC}/xac-thuc/000.00.00.H00-250305-0042?v=7KQ2M9XD", ("000.00.00.H00-250305-0042", "7KQ2M9XD")),
    ("http://127.0.0.1:8000/xac-thuc/DAI-0001?lang=en&v=abcd12", ("DAI-0001", "ABCD12")),
    ("HOSO-VERIFY:DAI-0001:7KQ2-M9XD", ("DAI-0001", "7KQ2-M9XD")),  # results issued before the link
    ("  HOSO-VERIFY:DAI-0001:7KQ2-M9XD\n", ("DAI-0001", "7KQ2-M9XD")),
    ("HOSO-VERIFY:DAI 0001:7KQ2", None),
    ("https://evil.example/xac-thuc/DAI-0001", None),
    ("javascript:alert(1)", None),
])
def test_result_qr_payloads(text: str, expected: tuple[str, str] | None) -> None:
    assert parse_verify_payload(text) == expected
