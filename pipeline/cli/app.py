"""The ``hoso`` command: desk (ingest), the lifecycle's steps (step, issue-result, worklist), verify, status,
archive (reprocess, sweep, fsck, signing refresh), users, and the registry's schema (db)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import click
import typer

from pipeline.cli.delivery import citizen_copy_name as _citizen_copy_name
from pipeline.cli.delivery import deliver as _deliver
from pipeline.cli.delivery import internal_error_line
from pipeline.cli.delivery import write_bytes as _write_bytes
from pipeline.core.errors import ExitCode, HosoError, InvalidRequest

if TYPE_CHECKING:
    from pipeline.usecases.services import Services

app = typer.Typer(
    name="hoso",
    help="hoso — hồ sơ: số hóa, kiểm tra, ký số và lưu trữ hồ sơ thủ tục hành chính.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("hoso")
T = TypeVar("T")


def _fail(err: HosoError) -> NoReturn:
    print(f"hoso: lỗi [{err.reason}]: {err.message_vi} — {err}", file=sys.stderr)
    raise typer.Exit(int(err.exit_code))


def _guard(fn: Callable[[], T]) -> T:
    """Run a command body: a HosoError becomes one clear line and its exit code.

    Anything else is a bug: one line for the clerk, exit 99, and the full traceback in the error log.
    """
    try:
        return fn()
    except HosoError as err:
        _fail(err)
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as err:
        log_path = _record_crash()
        print(internal_error_line(err, log_path), file=sys.stderr)
        raise typer.Exit(int(ExitCode.internal)) from None


def _record_crash() -> Path:
    """Append the current exception's traceback to <data_dir>/logs/errors.log; return its path."""
    import traceback
    from datetime import UTC

    from pipeline.core.settings import get_settings

    path = get_settings().data_dir / "logs" / "errors.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # tracebacks may quote personal data
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(f"--- {datetime.now(UTC).isoformat()} {' '.join(sys.argv)}\n{traceback.format_exc()}\n")
    except OSError:
        traceback.print_exc()
    return path


def _open_services() -> Services:
    from pipeline.usecases.services import Services  # heavy (OCR, signing, storage): only when needed

    return Services()


def _services() -> Services:
    """This command's Services, closed (OCR workers stopped) when the command ends, however it ends."""
    services = _open_services()
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(services.close)
    return services


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="English logs on stderr")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:  # flows log INFO to the Prefect API, not to the console
        handler.setLevel(logging.INFO if verbose else logging.WARNING)
    # pyHanko logs validation failures with tracebacks; the verification report already carries them.
    logging.getLogger("pyhanko").setLevel(logging.INFO if verbose else logging.CRITICAL)
    logging.getLogger("pyhanko_certvalidator").setLevel(logging.INFO if verbose else logging.CRITICAL)


@app.command()
def ingest(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="PDF, image, or folder of page images")],
    procedure: Annotated[str, typer.Option("--procedure", "-p", help="Procedure key or national code")],
    applicant_id: Annotated[str | None, typer.Option("--applicant-id", help="Applicant's 12-digit ID")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write <stem>.pdf, <stem>.json and the citizen's form here")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the receipt as JSON")] = False,
    via_prefect: Annotated[
        bool | None,
        typer.Option("--prefect/--direct", help="Run as a Prefect flow (default: only if PREFECT_API_URL is set)"),
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="The desk user receiving the dossier")] = None,
    server: Annotated[
        str | None,
        typer.Option("--server", metavar="URL", help="Hand the work to this running `hoso serve` (default: "
                     "HOSO_SERVER_URL); the desk user is the one of the API token (HOSO_API_TOKEN_FILE)"),
    ] = None,
) -> None:
    """Desk: digitise, check and receive one dossier; print the receipt (and the citizen's lookup link)."""
    from pipeline.cli.handoff import server_from

    remote = _guard(lambda: server_from(server))
    if remote is not None:
        if via_prefect or user:
            _fail(InvalidRequest("--server takes neither --prefect nor --user (the API token names the desk user)",
                                 "Khi gửi hồ sơ tới máy chủ, người tiếp nhận là chủ của mã truy cập; bỏ --user."))
        from pipeline.cli.handoff import ingest_remote

        _guard(lambda: ingest_remote(remote, input_path, procedure, applicant_id, out, as_json))
        return
    _ingest_here(input_path, procedure, applicant_id, out, as_json, via_prefect, user)


def _ingest_here(input_path: Path, procedure: str, applicant_id: str | None, out: Path | None, as_json: bool,
                 via_prefect: bool | None, user: str | None) -> None:
    """The desk chain in this process (or through the Prefect flow)."""
    from pipeline.cli.handoff import process_age
    from pipeline.core.models import Receipt
    from pipeline.usecases.desk import IntakeOutcome, intake_request, stored_copy
    from pipeline.usecases.desk import ingest as run_ingest

    services = _services()
    use_prefect = via_prefect if via_prefect is not None else bool(os.environ.get("PREFECT_API_URL"))
    request = _guard(lambda: intake_request(services, input_path, procedure, applicant_id, user))

    def body() -> IntakeOutcome:
        if not use_prefect:
            return run_ingest(request, services)
        from flows.desk import ingest_flow
        from flows.runtime import quick_flow_settings, use_services

        use_services(services)
        with quick_flow_settings():
            data = ingest_flow(str(input_path), procedure, applicant_id, user)
        already = bool(data.pop("already_done", False))
        return IntakeOutcome(Receipt.model_validate(data), already_done=already)

    startup = process_age()
    start = time.perf_counter()
    outcome = _guard(body)
    call_s = time.perf_counter() - start
    receipt = outcome.receipt.model_dump(mode="json")
    files: dict[str, bytes] = {}
    if out is not None:
        files["digitised"] = outcome.signed_pdf or _guard(
            lambda: stored_copy(services, outcome.receipt.dossier_code))
        if outcome.form is not None and outcome.form.citizen_pdf is not None:
            files[outcome.form.artifact] = outcome.form.citizen_pdf
    labels = {doc.type: services.catalog.label(doc.type) for doc in outcome.receipt.documents}
    _deliver(receipt, outcome.lookup_url, outcome.already_done, files, input_path, out, as_json,
             startup=startup, call_s=call_s, around="prefect" if use_prefect else "other", after=start + call_s,
             labels=labels, tz=services.settings.timezone)


PaymentMethod = typer.Option("--payment-method", help="bank_transfer or gateway (cashless only)")


@app.command("issue-result")
def issue_result(
    dossier_code: Annotated[str, typer.Argument(metavar="DOSSIER_CODE")],
    out: Annotated[Path | None, typer.Option("--out", help="Also write the e-result PDF here")] = None,
    payment_ref: Annotated[
        str | None, typer.Option("--payment-ref", help="Bank transfer / gateway reference of the fee, where due")
    ] = None,
    payment_method: Annotated[str, PaymentMethod] = "bank_transfer",
) -> None:
    """Batch: every remaining step to a returned e-result (approver's signature, agency seal), recorded as such."""
    from pipeline.usecases.clerk import issue_result as run_issue

    services = _services()
    payment = None if payment_ref is None else _payment(payment_ref, payment_method)
    issued = _guard(lambda: run_issue(dossier_code, services, payment=payment))
    print(f"Đã ký và trả kết quả điện tử: {issued.object_key} (mã tra cứu {issued.verification_code})")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"{dossier_code}-ket-qua.pdf"
        _write_bytes(target, issued.pdf)
        print(f"Tệp kết quả: {target}")


class VerifyProfile(StrEnum):
    auto = "auto"
    result = "result"
    basic = "basic"


def _signer_option(values: list[str]) -> dict[str, list[str]]:
    """``ROLE=CERT`` options (a PEM/DER file or a SHA-256 fingerprint) grouped by role."""
    from pipeline.core.errors import ConfigurationError

    by_role: dict[str, list[str]] = {}
    for value in values:
        role, sep, cert = value.partition("=")
        if not sep or not cert:
            raise ConfigurationError(
                f"--signer takes ROLE=CERT (a PEM/DER file or a SHA-256 fingerprint), not {value!r}",
                "Tùy chọn --signer cần dạng VAI_TRÒ=CHỨNG_THƯ (tệp chứng thư hoặc mã SHA-256).",
            )
        by_role.setdefault(role.strip(), []).append(cert.strip())
    return by_role


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(metavar="FILE.pdf")],
    trust: Annotated[list[Path] | None, typer.Option("--trust", help="Trusted root certificate (PEM/DER)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    at: Annotated[
        datetime | None,
        typer.Option("--at", metavar="ISO-TIME", formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"],
                     help="Validate as of this time (default: now; UTC unless an offset is given)"),
    ] = None,
    signer: Annotated[
        list[str] | None,
        typer.Option("--signer", metavar="ROLE=CERT",
                     help="Who may sign as ROLE (officer/approver/seal): a PEM/DER file or SHA-256 fingerprint; "
                          "repeatable (default: HOSO_SIGNER_CERTS, else the key source's certificates)"),
    ] = None,
    profile: Annotated[
        VerifyProfile,
        typer.Option("--profile", help="result: approver then seal required; basic: every signature holds; "
                                       "auto: result for hoso e-results"),
    ] = VerifyProfile.auto,
) -> None:
    """Verify every signature in a PDF (and the signers' roles); exit non-zero unless all hold."""
    from datetime import UTC

    from pipeline.cli.console import console, verification_panel
    from pipeline.core.errors import InputMissing
    from signing.identities import SignerIdentities
    from signing.verify import verify_pdf

    def body() -> Any:
        if not file.is_file():
            raise InputMissing(f"file not found: {file}", f"Không tìm thấy tệp: {file}")
        identities = SignerIdentities.from_config(_signer_option(signer)) if signer else None
        roots: list[bytes | Path] = list(trust or [])
        if not roots or identities is None:
            services = _services()
            roots = roots or list(services.settings.trust_roots) or [services.pki.root_cert]
            identities = identities if identities is not None else services.signer_identities
        when = None if at is None else at if at.tzinfo else at.replace(tzinfo=UTC)
        return verify_pdf(file.read_bytes(), roots, validation_time=when, identities=identities,
                          profile=profile.value)

    report = _guard(body)
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        console().print(verification_panel(file.name, report))
    if not report.ok:
        print(f"hoso: lỗi [failed]: {report.summary_vi} — {report.summary_en}", file=sys.stderr)
        raise typer.Exit(int(ExitCode.failed))


@app.command()
def status(
    dossier_code: Annotated[str, typer.Argument(metavar="DOSSIER_CODE")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a dossier's state, history and stored artifacts."""
    from pipeline.cli.console import console, status_panel

    services = _services()
    record = _guard(lambda: services.registry.get(dossier_code))
    if as_json:
        print(record.model_dump_json(indent=2))
    else:
        console().print(status_panel(record, services.settings.timezone))


@app.command()
def reprocess(
    folder: Annotated[str, typer.Argument(metavar="FOLDER", help="A folder, or s3://bucket/prefix")],
    procedure: Annotated[str | None, typer.Option("--procedure", "-p", help="Override manifest.csv")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Dossiers in flight at once (per worker, ≤ 8)")] = 1,
    pool: Annotated[
        str | None, typer.Option(help="Prefect work pool: the dossiers run on its workers (prefect worker start)")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker flow runs handed to --pool")] = 1,
    ocr_slots: Annotated[
        int | None, typer.Option(min=1, help="Slots of the hoso-ocr global concurrency limit (OCR at once)")
    ] = None,
    batch_id: Annotated[str | None, typer.Option(help="Resume this batch (default: a new one)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    agency_map: Annotated[
        Path | None, typer.Option("--agency-map", help="old_code,new_code[,new_name]: old units → new units")
    ] = None,
) -> None:
    """Archive: run the desk chain over every dossier in FOLDER (or under an S3 prefix) as a Prefect flow,
    here or on a work pool's workers (resumable, each input exactly once); legacy dossiers in manifest.csv are
    handed over to their new units, with a signed hand-over record."""
    import flows  # noqa: F401  (quiet Prefect defaults must be set before Prefect is imported)
    from flows.archive import reprocess_flow
    from flows.runtime import quick_flow_settings, use_services
    from pipeline.core.errors import InputMissing

    if not folder.startswith("s3://") and not Path(folder).is_dir():
        _fail(InputMissing(f"not a folder: {folder}", f"Không tìm thấy thư mục: {folder}"))
    if pool and not os.environ.get("PREFECT_API_URL"):
        print("hoso: lỗi [usage]: --pool cần máy chủ Prefect (PREFECT_API_URL) — --pool needs PREFECT_API_URL",
              file=sys.stderr)
        raise typer.Exit(int(ExitCode.usage))
    if agency_map is not None:  # a bad map stops the batch before any work
        from pipeline.domain.handover import load_agency_map

        _guard(lambda: load_agency_map(agency_map))
    use_services(_services())
    from prefect.task_runners import ThreadPoolTaskRunner

    runner: Any = ThreadPoolTaskRunner(max_workers=concurrency)  # Prefect's generic runner typing is too narrow
    flow = reprocess_flow.with_options(task_runner=runner)
    with quick_flow_settings():
        summary = _guard(lambda: flow(
            folder, procedure, batch_id=batch_id, show_progress=not as_json, pool=pool, workers=workers,
            concurrency=concurrency, ocr_slots=ocr_slots, agency_map=str(agency_map) if agency_map else None,
        ))
    if as_json:
        print(summary.model_dump_json(indent=2))
    else:
        print(
            f"Tổng: {summary.total} | đã xử lý: {summary.processed} | đã có từ trước: {summary.already_done} | "
            f"lỗi: {summary.failed} | {summary.seconds:.1f} s (batch {summary.batch_id})"
        )
        for name, reason in summary.failures.items():
            print(f"  ✘ {name}: {reason}")
        if summary.handover_record:
            print(f"Biên bản bàn giao: {summary.handover_record}")
    if summary.failed:
        raise typer.Exit(int(ExitCode.failed))


@app.command()
def watch(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="The scanner stations' inbox")],
    procedure: Annotated[
        str | None, typer.Option("--procedure", "-p", help="Default procedure (a .done marker or manifest.csv wins)")
    ] = None,
    settle: Annotated[float, typer.Option(min=0, help="Seconds a dossier must stay unchanged (without .done)")] = 5.0,
    poll: Annotated[float, typer.Option(min=0.05, help="Seconds between looks at the inbox")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Receive what is complete now, then exit")] = False,
) -> None:
    """Archive: receive each dossier dropped into DIR once complete; shelve it in DIR/done or DIR/failed."""
    import signal
    import threading

    from pipeline.usecases.watch import WatchItem, WatchOptions
    from pipeline.usecases.watch import watch as run_watch

    # One English line per dossier on stderr, past the console handlers' WARNING level.
    watch_log = logging.getLogger("pipeline.usecases.watch")
    watch_log.setLevel(logging.INFO)
    if not any(getattr(h, "hoso_watch", False) for h in watch_log.handlers):
        line = logging.StreamHandler(sys.stderr)
        line.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        line.hoso_watch = True  # type: ignore[attr-defined]
        watch_log.addHandler(line)
        watch_log.propagate = False
    services = _services()

    def preflight() -> None:
        services.preflight()
        services.ocr_engine  # noqa: B018  (a bad HOSO_OCR_ENGINE stops the watcher before it takes anything)

    _guard(preflight)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # stop after the current dossier
        signal.signal(sig, lambda *_: stop.set())

    def show(item: WatchItem) -> None:
        if item.outcome == "failed":
            print(f"✘ {item.name}: không tiếp nhận được — {item.reason_vi} → {item.shelved}", flush=True)
        else:
            again = " (đã tiếp nhận từ trước)" if item.outcome == "already_done" else ""
            print(f"✔ {item.name}: đã tiếp nhận, mã hồ sơ {item.dossier_code}{again} → {item.shelved}", flush=True)

    options = WatchOptions(procedure=procedure, settle=settle, poll=poll)
    summary = _guard(lambda: run_watch(folder, services, options, once=once, stop=stop, on_item=show))
    if once:
        print(f"Đã xử lý {len(summary.items)} hồ sơ, {summary.failed} lỗi, {len(summary.left)} chưa xử lý.")
        if summary.failed:
            raise typer.Exit(int(ExitCode.failed))


@app.command()
def stats(
    date_from: Annotated[datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="First day (YYYY-MM-DD)")],
    date_to: Annotated[datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="Last day, included")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Indicators of Decision 766 over the dossiers received in a period (see pipeline/domain/stats.py)."""
    from rich.table import Table

    from pipeline.cli.console import console
    from pipeline.domain.stats import compute_stats, table_rows

    if date_to < date_from:
        print("hoso: lỗi [usage]: ngày kết thúc trước ngày bắt đầu — --to is before --from", file=sys.stderr)
        raise typer.Exit(int(ExitCode.usage))
    services = _services()
    result = _guard(
        lambda: compute_stats(
            services.registry, date_from.date(), date_to.date(), tz=services.settings.timezone
        )
    )
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    table = Table(title=f"Chỉ số 766: hồ sơ tiếp nhận từ {date_from:%d/%m/%Y} đến {date_to:%d/%m/%Y}")
    for col in ("Chỉ số", "Tỷ lệ", "Số hồ sơ"):
        table.add_column(col)
    for row in table_rows(result):
        table.add_row(*row)
    console().print(table)


def _payment(reference: str, method: str) -> Any:
    """A Payment from the command line, or one clear usage error."""
    from pydantic import ValidationError

    from pipeline.core.errors import InvalidRequest
    from pipeline.domain.lifecycle import Payment

    try:
        return Payment.model_validate({"method": method, "reference": reference})
    except ValidationError as err:
        _fail(InvalidRequest(
            f"invalid payment: {err.errors()[0]['msg']}",
            "Mã thanh toán không hợp lệ (4–64 ký tự chữ, số, . _ / : -; phương thức bank_transfer hoặc gateway).",
        ))


#: The steps ``hoso step`` takes: the lifecycle's, but those the desk chain takes at intake.
STEP_HELP = (
    "forward, appraise, approve, seal, pay, return, request-supplement, supplemented, refuse, extend, stop, "
    "withdraw (pipeline/data/lifecycle.yaml)"
)


@app.command()
def step(
    action: Annotated[str, typer.Argument(metavar="ACTION", help=STEP_HELP)],
    dossier_code: Annotated[str, typer.Argument(metavar="DOSSIER_CODE")],
    user: Annotated[str, typer.Option("--user", help="The user taking the step (needs the step's role)")],
    note: Annotated[
        str | None, typer.Option("--note", help="Opinion / reason (appraise, refuse, stop, withdraw, extend…)")
    ] = None,
    missing: Annotated[
        list[str] | None, typer.Option("--missing", help="request-supplement: a missing document type (a|b: either)")
    ] = None,
    channel: Annotated[str, typer.Option("--channel", help="return: counter, post or online")] = "counter",
    tracking: Annotated[str | None, typer.Option("--tracking", help="return by post: the tracking number")] = None,
    payment_ref: Annotated[
        str | None, typer.Option("--payment-ref", help="pay / return: the payment reference")
    ] = None,
    payment_method: Annotated[str, PaymentMethod] = "bank_transfer",
    days: Annotated[
        int | None, typer.Option("--days", min=1, help="extend: working days of the new appointment")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the citizen's copies / the e-result here")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Take one lifecycle step on a dossier as a named user; it is refused unless the role and state allow it."""
    from pydantic import ValidationError

    from pipeline.core.errors import InvalidRequest
    from pipeline.domain.lifecycle import Delivery, load_lifecycle
    from pipeline.usecases import clerk
    from pipeline.usecases import lifecycle as lc
    from pipeline.usecases.lifecycle import StepOutcome

    services = _open_services()
    name = action.replace("-", "_")
    known = load_lifecycle().transitions
    if name not in known or name == "receive":
        _fail(InvalidRequest(f"unknown step {action!r}; steps: {STEP_HELP}", f"Không có bước xử lý {action!r}."))

    def body() -> StepOutcome:
        actor = lc.actor_for(services, user)
        code = dossier_code
        if name == "forward":
            return lc.forward(services, code, actor, note=note)
        if name == "appraise":
            return lc.appraise(services, code, actor, opinion=note or "")
        if name == "approve":
            return clerk.approve(services, code, actor)
        if name == "seal":
            return clerk.seal(services, code, actor)
        if name == "pay":
            if payment_ref is None:
                raise InvalidRequest("pay needs --payment-ref", "Cần mã thanh toán (--payment-ref).")
            return lc.record_payment(services, code, actor, _payment(payment_ref, payment_method))
        if name == "return":
            try:
                delivery = Delivery.model_validate({"channel": channel, "tracking_number": tracking})
            except ValidationError as err:
                raise InvalidRequest(
                    f"invalid delivery: {err.errors()[0]['msg']}",
                    "Cách trả kết quả không hợp lệ: counter, online, hoặc post kèm mã bưu gửi (--tracking).",
                ) from err
            payment = None if payment_ref is None else _payment(payment_ref, payment_method)
            return lc.return_result(services, code, actor, delivery=delivery, payment=payment)
        if name == "request_supplement":
            slots = [[t for t in item.split("|") if t] for item in (missing or [])]
            return lc.request_supplement(services, code, actor, reasons=[note] if note else [], missing=slots)
        if name == "supplemented":
            return lc.receive_supplement(services, code, actor, note=note)
        if name == "refuse":
            return lc.refuse(services, code, actor, reasons=[note] if note else [])
        if name == "extend":
            if days is None:
                raise InvalidRequest("extend needs --days", "Cần số ngày làm việc gia hạn (--days).")
            return lc.extend(services, code, actor, working_days=days, reason=note or "")
        if name == "stop":
            return lc.stop(services, code, actor, reason=note or "")
        return lc.withdraw(services, code, actor, reason=note or "")

    outcome = _guard(body)
    record = outcome.record
    labels = load_lifecycle()
    before = record.events[-1].from_state
    written: list[str] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for form in outcome.forms:
            if form.citizen_pdf is not None:
                target = out / _citizen_copy_name(dossier_code, form.artifact)
                _write_bytes(target, form.citizen_pdf)
                written.append(str(target))
        if outcome.result is not None:
            target = out / f"{dossier_code}-ket-qua.pdf"
            _write_bytes(target, outcome.result.pdf)
            written.append(str(target))
    if as_json:
        print(json.dumps({
            "dossier_code": record.code, "action": outcome.action, "role": outcome.role.value,
            "from_state": before, "state": record.state.value,
            "forms": [{"kind": f.kind, "artifact": f.artifact, "object_key": f.object_key, "sha256": f.sha256,
                       "lookup_url": f.lookup_url} for f in outcome.forms],
            "result": None if outcome.result is None else {
                "object_key": outcome.result.object_key, "verification_code": outcome.result.verification_code},
            "written": written,
        }, ensure_ascii=False, indent=2))
        return
    t = labels.transition(outcome.action)
    moved = "" if before is None or before == record.state else f": {labels.state_label(before)} → "
    print(f"Đã thực hiện bước \"{t.label}\" trên hồ sơ {record.code}{moved or ': '}{labels.state_label(record.state)}")
    for form in outcome.forms:
        print(f"  Lưu {form.object_key}" + (f" — tra cứu: {form.lookup_url}" if form.lookup_url else ""))
    if outcome.result is not None:
        print(f"  Kết quả điện tử: {outcome.result.object_key} (mã tra cứu {outcome.result.verification_code})")
    for path in written:
        print(f"  Tệp: {path}")


@app.command()
def worklist(
    role: Annotated[str | None, typer.Option("--role", help="Dossiers awaiting this role")] = None,
    due_soon: Annotated[bool, typer.Option("--due-soon", help="Due within one working day (not yet overdue)")] = False,
    overdue: Annotated[bool, typer.Option("--overdue", help="Past their appointment")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Work lists: the dossiers awaiting a role, due within one working day, or overdue."""
    from rich.table import Table

    from pipeline.cli.console import console
    from pipeline.core.errors import InvalidRequest
    from pipeline.core.models import Role
    from pipeline.usecases import lifecycle as lc
    from pipeline.usecases.lifecycle import WorkItem

    if sum([role is not None, due_soon, overdue]) != 1:
        _fail(InvalidRequest("give exactly one of --role, --due-soon, --overdue",
                             "Chọn đúng một danh sách: --role, --due-soon hoặc --overdue."))
    services = _open_services()

    def body() -> list[WorkItem]:
        if role is not None:
            if role not in Role.__members__:
                raise InvalidRequest(f"unknown role {role!r}", f"Không có vai trò {role!r}.")
            return lc.worklist(services, Role(role))
        return lc.due_soon(services) if due_soon else lc.overdue(services)

    items = _guard(body)
    if as_json:
        print(json.dumps([i.model_dump(mode="json") for i in items], ensure_ascii=False, indent=2))
        return
    title = f"Hồ sơ chờ vai trò {role}" if role else ("Hồ sơ đến hạn trong một ngày làm việc" if due_soon
                                                      else "Hồ sơ quá hạn")
    table = Table(title=f"{title}: {len(items)}")
    table.add_column("Mã hồ sơ", no_wrap=True)
    for col in ("Thủ tục", "Trạng thái", "Nhận lúc", "Hẹn trả", "Quá hạn"):
        table.add_column(col)
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(services.settings.timezone)
    for i in items:
        table.add_row(i.code, i.procedure, i.state_label, f"{i.received_at.astimezone(zone):%H:%M %d/%m/%Y}",
                      f"{i.appointment.astimezone(zone):%H:%M %d/%m/%Y}", "✘" if i.overdue else "")
    console().print(table)


users_app = typer.Typer(help="Named users with roles (desk, specialist, approver, clerk, admin) and API tokens.")
app.add_typer(users_app, name="users")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Mật khẩu / password", hide_input=True, confirmation_prompt=True))


def _roles(values: list[str]) -> list[Any]:
    from pipeline.core.errors import InvalidRequest
    from pipeline.core.models import Role

    bad = [v for v in values if v not in Role.__members__]
    if bad or not values:
        _fail(InvalidRequest(f"roles must be among {', '.join(Role)}; got {bad or 'none'}",
                             f"Vai trò phải thuộc: {', '.join(Role)}."))
    return [Role(v) for v in values]


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(metavar="USERNAME")],
    name: Annotated[str, typer.Option("--name", help="Display name, printed on the forms the user signs")],
    role: Annotated[list[str], typer.Option("--role", help="desk, specialist, approver, clerk, admin (repeat)")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin")] = False,
) -> None:
    """Add a user (asks for the password)."""
    from pipeline.usecases.lifecycle import identity

    roles = _roles(role)
    password = _read_password(password_stdin)
    user = _guard(lambda: identity(_open_services()).add_user(username, name, roles, password))
    print(f"Đã thêm người dùng {user.username} ({user.display_name}): {', '.join(user.roles)}")


@users_app.command("list")
def users_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the users (never their passwords)."""
    from pipeline.usecases.lifecycle import identity

    users = _guard(lambda: identity(_open_services()).users())
    if as_json:
        print(json.dumps([u.model_dump(mode="json") for u in users], ensure_ascii=False, indent=2))
        return
    for u in users:
        print(f"{u.username}\t{u.display_name}\t{','.join(u.roles)}\t{'hoạt động' if u.active else 'đã khóa'}")


@users_app.command("passwd")
def users_passwd(
    username: Annotated[str, typer.Argument(metavar="USERNAME")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin")] = False,
) -> None:
    """Set a user's password."""
    from pipeline.usecases.lifecycle import identity

    password = _read_password(password_stdin)
    _guard(lambda: identity(_open_services()).set_password(username, password))
    print(f"Đã đổi mật khẩu của {username}.")


@users_app.command("disable")
def users_disable(username: Annotated[str, typer.Argument(metavar="USERNAME")]) -> None:
    """Lock a user out (their tokens stop working too)."""
    from pipeline.usecases.lifecycle import identity

    _guard(lambda: identity(_open_services()).set_active(username, False))
    print(f"Đã khóa người dùng {username}.")


@users_app.command("enable")
def users_enable(username: Annotated[str, typer.Argument(metavar="USERNAME")]) -> None:
    """Let a locked user in again."""
    from pipeline.usecases.lifecycle import identity

    _guard(lambda: identity(_open_services()).set_active(username, True))
    print(f"Đã mở khóa người dùng {username}.")


@users_app.command("token")
def users_token(
    username: Annotated[str, typer.Argument(metavar="USERNAME")],
    scope: Annotated[str, typer.Option("--scope", help="The one role the token acts in (the user must hold it)")],
    label: Annotated[str | None, typer.Option("--label", help="What the token is for")] = None,
    days: Annotated[int | None, typer.Option("--days", min=1, help="Expires after N days (default: never)")] = None,
    revoke: Annotated[int | None, typer.Option("--revoke", metavar="ID", help="Revoke token ID instead")] = None,
) -> None:
    """Issue an API token (printed once; only its hash is kept), or revoke one."""
    from datetime import UTC, timedelta

    from pipeline.usecases.lifecycle import identity

    ident = identity(_open_services())
    if revoke is not None:
        record = _guard(lambda: ident.revoke_token(revoke))
        print(f"Đã thu hồi mã truy cập {record.id} của {record.username}.")
        return
    (role,) = _roles([scope])
    expires = None if days is None else datetime.now(UTC) + timedelta(days=days)
    token, record = _guard(lambda: ident.issue_token(username, role, label=label, expires_at=expires))
    print(f"Mã truy cập {record.id} của {username} (vai trò {record.scope}) — chỉ hiện một lần:", file=sys.stderr)
    print(token)


signing_app = typer.Typer(help="Signatures over time: archive upkeep of stored signed PDFs.")
app.add_typer(signing_app, name="signing")


@signing_app.command("refresh")
def signing_refresh(
    within_days: Annotated[
        int | None, typer.Option("--within-days", min=1, help="Renew when the TSA certificate expires within N days")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be renewed")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Add a new document timestamp to stored results and digitised copies whose long-term proof ages."""
    from datetime import timedelta

    from pipeline.usecases.upkeep import RefreshItem, refresh_stored

    services = _services()
    days = within_days or services.settings.refresh_before_days

    def show(item: RefreshItem) -> None:
        if not as_json:
            mark = {"refreshed": "✔", "would_refresh": "…", "failed": "✘"}[item.action]
            error = f" — {item.error}" if item.error else ""
            print(f"  {mark} {item.dossier_code} {item.artifact}: {item.reason}{error}")

    items = _guard(lambda: refresh_stored(
        services.store, services.registry, tsa_url=services.settings.tsa_url, trust_roots=services.trust_roots,
        trust_root_files=list(services.settings.trust_roots) or [services.pki.root_cert],
        within=timedelta(days=days), identities=services.signer_identities, dry_run=dry_run, on_item=show,
        retention=services.settings.retention,
    ))
    failed = [i for i in items if i.action == "failed"]
    if as_json:
        print(json.dumps([i.model_dump(mode="json") for i in items], ensure_ascii=False, indent=2))
    else:
        verb = "cần gia hạn" if dry_run else "đã gia hạn"
        print(f"{len(items) - len(failed)} tệp {verb}, {len(failed)} lỗi (ngưỡng {days} ngày).")
    if failed:
        raise typer.Exit(int(ExitCode.failed))


@app.command()
def sweep(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Archive: resolve what crashed desks left — stale reservations, unrecorded objects, missing locks."""
    from pipeline.usecases.upkeep import sweep_records

    services = _services()
    report = _guard(lambda: sweep_records(services.store, services.registry, services.settings))
    if as_json:
        print(json.dumps({"items": report.items, "errors": report.errors}, ensure_ascii=False, indent=2))
    else:
        for item in report.items:
            print(f"  ✔ {item['action']} {item['dossier_code'] or ''}: {item['detail']}")
        for error in report.errors:
            print(f"  ✘ {error}")
        print(f"Đã xử lý {len(report.items)} việc tồn đọng, {len(report.errors)} lỗi.")
    if report.errors:
        raise typer.Exit(int(ExitCode.storage_failed))


@app.command()
def fsck(
    repair: Annotated[bool, typer.Option("--repair", help="Resolve what is safely resolvable (never a record)")] = (
        False
    ),
    as_json: Annotated[bool, typer.Option("--json")] = False,
    signatures: Annotated[bool, typer.Option("--signatures/--no-signatures", help="Verify signed records")] = True,
) -> None:
    """Archive: check registry ↔ objects ↔ SHA-256 ↔ signatures ↔ locks; exit 1 if an inconsistency remains."""
    from pipeline.usecases.fsck import fsck as run_fsck

    services = _services()
    report = _guard(lambda: run_fsck(services, repair=repair, signatures=signatures))
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        for f in report.findings:
            mark = "✔" if f.repaired else "✘"
            where = " ".join(x for x in (f.dossier_code, f.key) if x)
            print(f"  {mark} {f.kind} {where}: {f.detail}")
        for note in report.notes:
            print(f"  · {note}")
        checked = ", ".join(f"{n} {what}" for what, n in sorted(report.checked.items()))
        print(f"fsck: {checked or 'nothing'}; {len(report.remaining)} điểm không nhất quán"
              f"{f', {len(report.findings) - len(report.remaining)} đã sửa' if repair else ''}.")
    if not report.ok:
        raise typer.Exit(int(ExitCode.failed))


db_app = typer.Typer(help="The registry database's schema (Alembic migrations).")
app.add_typer(db_app, name="db")


def _registry_unmigrated() -> Any:
    from storage.registry import Registry

    services = _services()
    services.check_production()
    return Registry(services.settings.resolved_database_url, timezone=services.settings.timezone, upgrade="never")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Migrate the registry to the newest schema (or REVISION); a registry from before migrations is stamped first."""
    from storage import schema

    def body() -> tuple[str | None, str | None]:
        registry = _registry_unmigrated()
        try:
            return schema.upgrade(registry.engine, revision)
        except Exception as err:
            from pipeline.core.errors import StorageFailed

            raise StorageFailed(f"migration failed: {type(err).__name__}: {err}",
                                "Nâng cấp lược đồ cơ sở dữ liệu hồ sơ thất bại.") from err
        finally:
            registry.close()

    before, after = _guard(body)
    print(f"Lược đồ cơ sở dữ liệu hồ sơ: {before or '(chưa có)'} → {after}")


@db_app.command("current")
def db_current() -> None:
    """Print the registry's schema revision and whether it is the newest this hoso knows."""
    from storage import schema

    def body() -> tuple[str, str | None]:
        registry = _registry_unmigrated()
        try:
            return schema.state(registry.engine)
        finally:
            registry.close()

    state, revision = _guard(body)
    print(f"{revision or '(chưa có)'} ({state}; mới nhất: {schema.head()})")


natdb_app = typer.Typer(help="Reference national databases (population DB + citizens' data stores).")
app.add_typer(natdb_app, name="natdb")


@natdb_app.command("serve")
def natdb_serve(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8700,
) -> None:
    """Serve the reference national-database service on the registry database (HOSO_DATABASE_URL)."""
    from pipeline.national.service import main as serve

    raise typer.Exit(serve(["--host", host, "--port", str(port)]))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8000,
) -> None:
    """Serve the one-stop centre: citizen pages, staff pages and the REST API (/api/, /openapi.json)."""
    import uvicorn

    from pipeline.core.settings import get_settings
    from pipeline.usecases.services import web_services
    from pipeline.web.app import create_app

    services = _guard(lambda: web_services(get_settings()))  # its own national-database client
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(services.close)
    _guard(services.preflight)  # bad configuration: one line and its exit code, before the port is bound
    # One process: sessions, rate limits and desk jobs live in its memory.
    uvicorn.run(create_app(services, warm=True), host=host, port=port, log_level="info", proxy_headers=True,
                server_header=False)


@app.command()
def train(
    out: Annotated[Path | None, typer.Option("--out", help="Model file (default: the bundled one)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic training documents")] = 0,
    per_type: Annotated[int, typer.Option("--per-type", min=4, help="Synthetic documents per type")] = 240,
) -> None:
    """Train the document-type model on generated synthetic documents (deterministic for a seed)."""
    from pipeline.domain.doctype_model import bundled_model_path, save_model
    from pipeline.training.train import train_model

    def body() -> tuple[str, dict[str, float]]:
        model, metrics = train_model(seed=seed, per_type=per_type)
        return save_model(model, out or bundled_model_path()), metrics

    digest, metrics = _guard(body)
    print(f"{out or bundled_model_path()}  sha256 {digest}")
    print(", ".join(f"{k} {v:g}" for k, v in metrics.items()))


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Where to write the demo's PDFs and JSON")] = Path("var/demo"),
) -> None:
    """Run the whole path on the bundled sample dossier: receive, issue the result, verify, look up."""
    from importlib.resources import files

    from pipeline.usecases.desk import stored_copy
    from storage import keys

    sample = Path(str(files("pipeline") / "data" / "sample_dossier.pdf"))
    print(f"== 1. Tiếp nhận hồ sơ mẫu: {sample.name}")
    _ingest_here(sample, "business_household_registration", None, out, False, None, None)
    receipt = json.loads((out / "sample_dossier.json").read_text(encoding="utf-8"))
    code = receipt["dossier_code"]
    print("== 2. Kiểm tra chữ ký bản số hóa")
    _run_quietly(lambda: verify(out / "sample_dossier.pdf", None, False, None))
    services = _services()
    record = services.registry.get(code)
    result_pdf = out / f"{code}-ket-qua.pdf"
    if record.state == "received":
        print("== 3. Phê duyệt, ký số và đóng dấu kết quả điện tử")
        issue_result(code, out)
    else:  # a second demo run: the result was issued before; take it from storage
        print(f"== 3. Kết quả điện tử đã được trả trước đó (trạng thái: {record.state})")
        _write_bytes(result_pdf, stored_copy(services, code, keys.RESULT))
    print("== 4. Kiểm tra chữ ký kết quả điện tử")
    _run_quietly(lambda: verify(result_pdf, None, False, None))
    print("== 5. Tra cứu hồ sơ")
    status(code, False)


def _run_quietly(fn: Callable[[], None]) -> None:
    try:
        fn()
    except typer.Exit as exc:
        if exc.exit_code:
            raise


if __name__ == "__main__":
    app()
