"""The ``hoso`` console entry point: a desk hand-off goes straight to the upload, everything else to the Typer app.

A desk PC handing its scan to a running ``hoso serve`` (``hoso ingest INPUT -p P --server URL``, or with
HOSO_SERVER_URL set) waits for the service's receipt; this process's own start-up is part of the desk's wait.
So the well-formed hand-off command line is read here with the standard library alone and runs
:func:`pipeline.cli.handoff.ingest_remote` without importing Typer, pydantic, the settings, SQLAlchemy or
OpenCV. Any other command line — another command, ``--help``, an option this reader does not know, a
missing argument — goes to the Typer app (``pipeline/cli/app.py``), which gives its usual messages.
The receipt, the ``--out`` files, the exit codes and the error lines are those of the Typer command.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: ``hoso ingest``'s options that the hand-off takes (Typer's names); flags take no value.
_VALUED = {"--procedure": "procedure", "-p": "procedure", "--applicant-id": "applicant_id", "--out": "out",
           "--server": "server"}
_FLAGS = {"--json": "as_json"}
_GLOBAL_FLAGS = {"-v", "--verbose"}


@dataclass(frozen=True)
class HandOffArgs:
    """A ``hoso ingest`` command line this module runs itself."""

    input_path: Path
    procedure: str
    applicant_id: str | None = None
    out: Path | None = None
    as_json: bool = False
    server: str | None = None
    verbose: bool = False


def hand_off_args(argv: list[str], environ: Mapping[str, str] = os.environ) -> HandOffArgs | None:
    """``argv`` (without the program name) as a hand-off, or None when the Typer app must read it: not
    ``ingest``, no server (``--server`` or HOSO_SERVER_URL), or anything this reader does not take as Typer would."""
    verbose = False
    rest = list(argv)
    while rest and rest[0] in _GLOBAL_FLAGS:
        verbose = True
        rest.pop(0)
    if not rest or rest[0] != "ingest":
        return None
    values: dict[str, str] = {}
    flags: set[str] = set()
    positional: list[str] = []
    tokens = iter(rest[1:])
    for token in tokens:
        if token == "--":
            positional.extend(tokens)
            break
        if not token.startswith("-") or token == "-":
            positional.append(token)
            continue
        name, eq, value = token.partition("=") if token.startswith("--") else (token[:2], "", token[2:])
        if name in _FLAGS and not eq and not value:
            flags.add(_FLAGS[name])
        elif name in _VALUED:
            if not eq and not value:
                value = next(tokens, None)  # type: ignore[assignment]
                if value is None:
                    return None  # Typer says what is missing
            values[_VALUED[name]] = value  # the last one wins, as with Typer
        else:
            return None  # --help, --prefect, --user, a typo…: Typer's answer
    if len(positional) != 1 or "procedure" not in values:
        return None
    server = values.get("server")
    if not (server or environ.get("HOSO_SERVER_URL", "").strip()):
        return None  # the chain runs here: the Typer command
    out = values.get("out")
    return HandOffArgs(Path(positional[0]), values["procedure"], values.get("applicant_id"),
                       Path(out) if out is not None else None, "as_json" in flags, server, verbose)


def run_hand_off(args: HandOffArgs) -> int:
    """The hand-off; its exit code. Errors as the Typer command prints them (one line, Vietnamese — English)."""
    from pipeline.cli.delivery import internal_error_line
    from pipeline.cli.handoff import ingest_remote, server_from
    from pipeline.core.errors import ExitCode, HosoError

    if args.verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)
    try:
        server = server_from(args.server)
        if server is None:  # cannot happen: hand_off_args saw a server
            raise AssertionError("no server to hand off to")
        ingest_remote(server, args.input_path, args.procedure, args.applicant_id, args.out, args.as_json)
    except HosoError as err:
        print(f"hoso: lỗi [{err.reason}]: {err.message_vi} — {err}", file=sys.stderr)
        return int(err.exit_code)
    except KeyboardInterrupt:  # as Click reports it
        print("\nAborted!", file=sys.stderr)
        return 1
    except Exception as err:
        from pipeline.cli.app import _record_crash  # a bug: the Typer command's crash log (loads it, rarely)

        log_path = _record_crash()
        print(internal_error_line(err, log_path), file=sys.stderr)
        return int(ExitCode.internal)
    return 0


def main() -> None:
    """``hoso``: the hand-off here, any other command line in the Typer app."""
    args = hand_off_args(sys.argv[1:])
    if args is not None:
        sys.exit(run_hand_off(args))
    from pipeline.cli.app import app

    app(prog_name="hoso")
