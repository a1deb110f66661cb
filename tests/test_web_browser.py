"""Each role's main path in a real browser (Debian's chromium driven by Playwright) against a real
``hoso serve`` process: desk upload → receipt; specialist → approver → clerk → returned; the citizen's
lookup from the receipt's QR link; the verify page from the e-result's QR; the handbook search and the kiosk.
The OCR is the scripted engine (tests/support/fake_ocr.py): the rest of the desk chain runs for real.

Every page visited is written as a PNG to ``$HOSO_SCREENSHOTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from support.pdfs import decode_qr
from support.web import WebServer, start_web
from test_web import last_page

from pipeline.core.models import Role
from pipeline.core.settings import Settings
from pipeline.usecases.services import Services
from storage import keys
from storage.identity import Identity

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "mat-khau-du-dai-1"
USERS = {Role.desk: "lan", Role.specialist: "minh", Role.approver: "hung", Role.clerk: "thu", Role.admin: "quan"}
SAMPLE = Path(str(files("pipeline") / "data" / "sample_dossier.pdf"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is missing (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("HOSO_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web")


@pytest.fixture(scope="module")
def env(data: Path) -> dict[str, str]:
    return {"HOSO_DATA_DIR": str(data / "var"), "HOSO_LEVEL_DIGITISED": "B-B", "HOSO_LEVEL_RESULT": "B-B",
            "HOSO_OCR_JOBS": "1", "HOSO_MODE": "development",
            "HOSO_OCR_ENGINE": "support.fake_ocr:ScriptedEngine"}  # the sample dossier's text, no Tesseract


@pytest.fixture(scope="module")
def server(env: dict[str, str], data: Path) -> Iterator[WebServer]:
    services = Services(Settings(data_dir=Path(env["HOSO_DATA_DIR"])))
    ident = Identity(services.registry)
    for role, name in USERS.items():
        ident.add_user(name, f"{name.capitalize()} ({role.value})", [role], PASSWORD)
    services.registry.close()
    web = start_web(env, data)
    yield web
    web.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def new_page(browser: Any, *, width: int = 1280, height: int = 900) -> Any:
    context = browser.new_context(viewport={"width": width, "height": height}, locale="vi-VN")
    page = context.new_page()
    page.set_default_timeout(30_000)
    return page


def snap(page: Any, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def sign_in(browser: Any, server: WebServer, role: Role) -> Any:
    page = new_page(browser)
    page.goto(f"{server.url}/nhan-vien/dang-nhap")
    page.fill("input[name=username]", USERS[role])
    page.fill("input[name=password]", PASSWORD)
    page.click("form.card button[type=submit]")
    page.wait_for_url(f"{server.url}/nhan-vien")
    return page


class Flow:
    """What the steps pass on: the dossier code and the citizen's lookup link."""

    code = ""
    lookup_url = ""


def test_desk_uploads_a_scan_and_gets_the_receipt(browser: Any, server: WebServer, shots: Path) -> None:
    page = sign_in(browser, server, Role.desk)
    snap(page, shots, "01-desk-worklists")
    page.goto(f"{server.url}/nhan-vien/tiep-nhan")
    page.select_option("select[name=procedure]", "business_household_registration")
    page.set_input_files("input[name=scan]", str(SAMPLE))
    snap(page, shots, "02-desk-upload")
    page.click("#desk-form button[type=submit]")
    page.wait_for_url("**/nhan-vien/tiep-nhan/*")
    snap(page, shots, "03-desk-processing")
    page.wait_for_selector("#job-done:not([hidden])", timeout=240_000)
    snap(page, shots, "04-desk-receipt")
    assert "Đã tiếp nhận" in page.inner_text("#receipt-status")
    Flow.code = page.inner_text("#dossier-link").strip()
    Flow.lookup_url = page.get_attribute("#lookup-url", "href") or ""
    assert Flow.code and Flow.lookup_url.startswith(f"{server.url}/tra-cuu/{Flow.code}?s=")
    page.click("#dossier-link")
    page.wait_for_selector("#documents")
    assert page.locator("#pages img").count() >= 1
    page.wait_for_function("() => [...document.querySelectorAll('#pages img')].every(i => i.naturalWidth > 0)")
    snap(page, shots, "05-dossier-received")
    page.fill("#step-forward input[name=note]", "Chuyển phòng chuyên môn")
    page.click("#step-forward button[type=submit]")
    page.wait_for_selector("#done")
    assert "Đang thẩm định" in page.inner_text("#state")


@pytest.mark.parametrize(("role", "action", "fields", "state"), [
    (Role.specialist, "appraise", {"note": "Hồ sơ đủ điều kiện cấp"}, "Chờ lãnh đạo phê duyệt"),
    (Role.approver, "approve", {}, "Chờ văn thư đóng dấu, phát hành"),
    (Role.clerk, "seal", {}, "Đã xử lý xong, chờ trả kết quả"),
])
def test_each_role_takes_its_step(browser: Any, server: WebServer, shots: Path, role: Role, action: str,
                                  fields: dict[str, str], state: str) -> None:
    assert Flow.code, "the desk test runs first"
    page = sign_in(browser, server, role)
    assert Flow.code in page.inner_text(f"#queue-{role.value}")
    snap(page, shots, f"06-{role.value}-worklist")
    page.click(f"#queue-{role.value} a:has-text('{Flow.code}')")
    page.wait_for_selector(f"#step-{action}")
    for name, value in fields.items():
        page.fill(f"#step-{action} [name={name}]", value)
    page.click(f"#step-{action} button[type=submit]")
    page.wait_for_selector("#done", timeout=120_000)
    assert state in page.inner_text("#state")
    snap(page, shots, f"07-{role.value}-{action}")


def test_desk_returns_the_result_by_post(browser: Any, server: WebServer, shots: Path) -> None:
    page = sign_in(browser, server, Role.desk)
    page.goto(f"{server.url}/nhan-vien/ho-so/{Flow.code}")
    page.select_option("#step-return select[name=channel]", "post")
    page.fill("#step-return input[name=tracking]", "EL123456789VN")
    page.click("#step-return button[type=submit]")
    page.wait_for_selector("#done", timeout=120_000)
    assert "Đã trả kết quả" in page.inner_text("#state")
    snap(page, shots, "08-desk-returned")
    page.goto(f"{server.url}/nhan-vien/thong-ke")
    assert page.locator("#indicators svg").count() == 1
    assert "Hồ sơ tiếp nhận: 1" in page.inner_text("#indicators")  # the default period ends today, local time
    snap(page, shots, "09-statistics")


def test_citizen_looks_up_from_the_receipt_qr_link(browser: Any, server: WebServer, shots: Path) -> None:
    page = new_page(browser, width=414, height=896)  # a phone
    page.goto(Flow.lookup_url)
    text = page.inner_text("#status")
    assert "Đã trả kết quả" in text and "EL123456789VN" in text
    snap(page, shots, "10-citizen-lookup")
    page.click("a.lang")
    assert "Postal tracking number" in page.inner_text("#status")
    snap(page, shots, "11-citizen-lookup-en")
    page.goto(f"{server.url}/tra-cuu/{Flow.code}?s=wrong-secret&lang=vi")
    assert "hỏi tại quầy" in page.inner_text("#not-found")
    snap(page, shots, "12-citizen-lookup-refused")


def test_the_result_qr_opens_the_verify_page(browser: Any, server: WebServer, shots: Path, env: dict[str, str],
                                             data: Path) -> None:
    services = Services(Settings(data_dir=Path(env["HOSO_DATA_DIR"])))
    pdf = services.store.get_bytes(services.registry.get(Flow.code).artifacts[keys.RESULT].object_key)
    services.registry.close()
    (link,) = [q for q in decode_qr(pdf, last_page(pdf)) if "/xac-thuc/" in q]
    assert link.startswith(f"{server.url}/xac-thuc/{Flow.code}?v=")
    page = new_page(browser, width=414, height=896)
    page.goto(link)
    assert "Hợp lệ" in page.inner_text("#verdict")
    snap(page, shots, "13-verify-from-qr")
    result = data / "ket-qua.pdf"
    result.write_bytes(pdf)
    page.goto(f"{server.url}/xac-thuc")
    page.set_input_files("input[name=file]", str(result))
    page.click("form.card button[type=submit]")
    page.wait_for_selector("#verdict")
    assert "Hợp lệ" in page.inner_text("#verdict")
    snap(page, shots, "14-verify-upload")


def test_handbook_search_and_kiosk(browser: Any, server: WebServer, shots: Path) -> None:
    page = new_page(browser)
    page.goto(f"{server.url}/thu-tuc")
    page.fill("input[name=q]", "KHAI SINH")
    page.click("form.search button")
    page.wait_for_url("**/thu-tuc?q=*")
    assert "Đăng ký khai sinh" in page.inner_text("main")
    snap(page, shots, "15-handbook-search")
    kiosk = new_page(browser, width=1080, height=1920)
    kiosk.goto(f"{server.url}/kiosk")
    snap(kiosk, shots, "16-kiosk-home")
    kiosk.click("a.tile >> nth=1")
    kiosk.fill("input[name=q]", "ket hon")
    kiosk.click("form.search button")
    kiosk.wait_for_url("**/kiosk/thu-tuc?q=*")
    assert "Đăng ký kết hôn" in kiosk.inner_text("main")
    box = kiosk.locator("form.search button").bounding_box()
    assert box and box["height"] >= 64  # touch-sized
    snap(kiosk, shots, "17-kiosk-handbook")
    kiosk.goto(f"{server.url}/kiosk/tra-cuu")
    snap(kiosk, shots, "18-kiosk-lookup")


def test_admin_adds_a_user_and_the_staff_pages_speak_english(browser: Any, server: WebServer, shots: Path) -> None:
    page = sign_in(browser, server, Role.admin)
    page.goto(f"{server.url}/nhan-vien/quan-tri/nguoi-dung")
    snap(page, shots, "19-admin-users")
    page.fill("#add-user input[name=username]", "hoa")
    page.fill("#add-user input[name=display_name]", "Phạm Thị Hoa")
    page.fill("#add-user input[name=password]", "mat-khau-moi-123")
    page.check("#add-user input[name=roles][value=desk]")
    page.click("#add-user button[type=submit]")
    page.wait_for_selector("#done")
    assert page.locator("#user-hoa").count() == 1
    snap(page, shots, "20-admin-user-added")
    page.click("header a.lang")
    page.wait_for_url("**lang=en**")
    assert page.inner_text("h1") == "Users"
    snap(page, shots, "21-admin-users-en")
    desk = sign_in(browser, server, Role.desk)
    desk.goto(f"{server.url}/nhan-vien?lang=en")
    assert "Work queues" in desk.inner_text("h1")
    snap(desk, shots, "22-worklists-en")
    desk.goto(f"{server.url}/nhan-vien/ho-so/{Flow.code}")
    assert "Audit trail" in desk.inner_text("#history")
    snap(desk, shots, "23-dossier-en")


def test_desk_receives_a_supplement_and_prints_the_new_receipt(browser: Any, server: WebServer, shots: Path,
                                                                env: dict[str, str]) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime, timedelta

    from support.lifecycle import receive

    def asked_to_supplement() -> str:  # signs its Mẫu 02: not on Playwright's event loop
        services = Services(Settings(data_dir=Path(env["HOSO_DATA_DIR"]), level_digitised="B-B"))
        try:
            return receive(services, datetime.now(UTC) - timedelta(days=2), status="needs_supplement")[0]
        finally:
            services.registry.close()

    with ThreadPoolExecutor(1) as pool:
        code = pool.submit(asked_to_supplement).result()
    page = sign_in(browser, server, Role.desk)
    page.goto(f"{server.url}/nhan-vien/ho-so/{code}?lang=vi")
    page.fill("#step-supplemented input[name=note]", "Công dân nộp bổ sung giấy đề nghị")
    page.click("#step-supplemented button[type=submit]")
    page.wait_for_selector("#handout")
    assert "Đã tiếp nhận" in page.inner_text("#state") and "Mẫu 01" in page.inner_text("#handout")
    snap(page, shots, "24-supplement-new-receipt")
    href = page.get_attribute("#handout a", "href")
    response = page.request.get(f"{server.url}{href}")
    assert response.ok and response.body().startswith(b"%PDF")


def test_screenshots_are_written(shots: Path) -> None:
    names = sorted(p.name for p in shots.glob("*.png"))
    assert len(names) >= 24, names
