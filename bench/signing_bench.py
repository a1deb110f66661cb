"""Signing and verification throughput: hoso in-process (PKCS#12 file, SoftHSM2 token) vs the pyhanko CLI.

    .venv/bin/python bench/signing_bench.py [--seconds 4] [--cli-runs 3] [--no-cli]

Everything runs on this machine: the certomancer test PKI (TSA, OCSP, CRLs) is served on 127.0.0.1,
the token is a fresh SoftHSM2 store in a temporary folder; the signer is the test PKI's officer
(RSA-2048), with a visible stamp (as the desk signs). "/s" is wall-clock; "/CPU-s" divides by this
process's CPU time (the CLI: its children's), a steadier figure on a shared machine. B-LT(A) rates
include the HTTP round trips to the local TSA, which runs in its own process.

Targets: B-B in-process >= 25/s on one core; B-LTA >= 3/s with a local TSA.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pyhanko.keys import load_cert_from_pemder  # noqa: E402
from reportlab.lib.pagesizes import A4  # noqa: E402
from reportlab.pdfgen import canvas  # noqa: E402
from support.softhsm import DEFAULT_MODULE, import_p12, init_token, open_token, write_config  # noqa: E402
from support.testpki import TestPki, materialise  # noqa: E402

from signing.identities import SignerIdentities  # noqa: E402
from signing.levels import Level  # noqa: E402
from signing.signers import _load_signer, sign_pdf  # noqa: E402
from signing.tokens import Pkcs11Keys  # noqa: E402
from signing.verify import verify_pdf  # noqa: E402

BOX = (340.0, 750.0, 580.0, 830.0)
PIN_ENV = "HOSO_BENCH_PIN"


def document(pages: int) -> bytes:
    buf = BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    for n in range(1, pages + 1):
        c.setFont("Helvetica", 11)
        for line in range(40):
            c.drawString(56, 780 - 18 * line, f"Trang {n}, dong {line + 1}: ho so thu tuc hanh chinh so {n:04d}")
        c.showPage()
    c.save()
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_test_pki(directory: Path) -> tuple[TestPki, subprocess.Popen[bytes]]:
    port = free_port()
    pki = materialise(directory, port)
    script = ROOT / "tests" / "support" / "testpki.py"
    proc = subprocess.Popen([sys.executable, str(script), "serve", str(directory), str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            urllib.request.urlopen(f"{pki.base_url}/hoso-test/crls/interm/latest.crl", timeout=2)
            return pki, proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("test PKI server did not start")


def rate(fn: Callable[[], object], seconds: float, max_runs: int = 200) -> tuple[float, float, int]:
    """(runs per wall second, runs per CPU second, runs) after one warm-up run."""
    fn()
    n, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while n < max_runs and (n < 3 or time.perf_counter() - wall0 < seconds):
        fn()
        n += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return n / wall, n / max(cpu, 1e-9), n


def cli_rate(cmds: list[list[str]]) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall0 = time.perf_counter()
    for cmd in cmds:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-500:]}")
    wall = time.perf_counter() - wall0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return len(cmds) / wall, len(cmds) / max(cpu, 1e-9), len(cmds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="time per in-process case")
    parser.add_argument("--cli-runs", type=int, default=3, help="pyhanko CLI invocations per case")
    parser.add_argument("--no-cli", action="store_true")
    args = parser.parse_args()
    rows: list[tuple[str, str, str, str, tuple[float, float, int]]] = []
    with tempfile.TemporaryDirectory(prefix="hoso-sigbench-") as tmp_name:
        tmp = Path(tmp_name)
        pki, server = serve_test_pki(tmp / "pki")
        try:
            pin = secrets.token_hex(4)
            os.environ[PIN_ENV] = pin
            conf = write_config(tmp / "softhsm")
            init_token(conf, "bench", pin)
            os.environ["SOFTHSM2_CONF"] = str(conf)  # before the module is loaded
            with open_token(DEFAULT_MODULE, "bench", pin) as session:
                import_p12(session, pki.p12("officer"), pki.passphrase, "officer", b"\x01", with_ca=True)
            signers = {
                "PKCS#12": _load_signer(pki.p12("officer"), pki.passphrase, "officer"),
                "SoftHSM": Pkcs11Keys(DEFAULT_MODULE, "bench", None, PIN_ENV).signer("officer"),
            }
            root = load_cert_from_pemder(str(pki.root_cert))
            officer = SignerIdentities.from_config({"officer": [pki.cert_pem("officer")]})
            docs = {"1 p": document(1), "100 p": document(100)}
            signed: dict[Level, bytes] = {}
            for source, signer in signers.items():
                for level in (Level.B_B, Level.B_T, Level.B_LTA):
                    for doc_name, pdf in docs.items():
                        def one(pdf: bytes = pdf, signer=signer, level: Level = level) -> bytes:
                            return sign_pdf(
                                pdf, signer, field_name="CanBoTiepNhan", reason="Chứng thực bản số hóa",
                                location="Bộ phận một cửa", signer_name="Nguyễn Thị Ánh Tuyết",
                                role_label="Cán bộ tiếp nhận", visible_box=BOX, timestamp_url=pki.tsa_url,
                                level=level, trust_roots=[root],
                            )
                        rows.append(("sign", f"hoso {source}", str(level), doc_name, rate(one, args.seconds)))
                        if source == "PKCS#12" and doc_name == "1 p":
                            signed[level] = one()
                        print(*rows[-1][:4], f"{rows[-1][4][0]:.1f}/s", file=sys.stderr)
            for level, pdf in signed.items():
                def check(pdf: bytes = pdf) -> object:
                    return verify_pdf(pdf, [pki.root_cert], identities=officer)
                rows.append(("verify", "hoso verify_pdf", str(level), "1 p", rate(check, args.seconds)))
            if not args.no_cli:
                rows += cli_cases(tmp, pki, docs, signed, args.cli_runs)
        finally:
            server.terminate()
            server.wait(10)
    print(f"\n{'what':<7} {'who':<18} {'level':<6} {'doc':<6} {'/s':>7} {'/CPU-s':>7} {'runs':>5}")
    for what, who, level_name, doc, (per_s, per_cpu, n) in rows:
        print(f"{what:<7} {who:<18} {level_name:<6} {doc:<6} {per_s:>7.2f} {per_cpu:>7.2f} {n:>5}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine: noisy)")


def cli_cases(
    tmp: Path, pki: TestPki, docs: dict[str, bytes], signed: dict[Level, bytes], runs: int
) -> list[tuple[str, str, str, str, tuple[float, float, int]]]:
    exe = str(Path(sys.executable).with_name("pyhanko"))
    passfile = tmp / "pass"
    passfile.write_bytes(pki.passphrase)
    flags = {
        Level.B_B: ["--use-pades"],
        Level.B_T: ["--use-pades", "--timestamp-url", pki.tsa_url],
        Level.B_LTA: ["--use-pades", "--use-pades-lta", "--with-validation-info", "--timestamp-url", pki.tsa_url,
                      "--trust", str(pki.root_cert), "--trust-replace"],
    }
    field = "1/{:.0f},{:.0f},{:.0f},{:.0f}/CanBoTiepNhan".format(*BOX)
    rows = []
    for level, extra in flags.items():
        for doc_name, pdf in docs.items():
            src = tmp / f"in-{doc_name.replace(' ', '')}.pdf"
            src.write_bytes(pdf)
            cmds = [[exe, "sign", "addsig", "--field", field, *extra, "pkcs12", "--passfile", str(passfile),
                     str(src), str(tmp / f"cli-{level}-{i}.pdf"), str(pki.p12("officer"))] for i in range(runs)]
            rows.append(("sign", "pyhanko CLI", str(level), doc_name, cli_rate(cmds)))
            print(*rows[-1][:4], f"{rows[-1][4][0]:.2f}/s", file=sys.stderr)
    for signed_level, pdf in signed.items():
        path = tmp / f"verify-{signed_level}.pdf"
        path.write_bytes(pdf)
        cmd = [exe, "sign", "validate", "--trust", str(pki.root_cert), "--trust-replace", "--executive-summary",
               str(path)]
        rows.append(("verify", "pyhanko CLI", str(signed_level), "1 p", cli_rate([cmd] * runs)))
    return rows


if __name__ == "__main__":
    main()
