"""An archive batch without Prefect: ``python -m support.batch FOLDER [--procedure KEY]``.

Every input of FOLDER goes through :func:`pipeline.usecases.archive.process_one` in turn, as one worker's
tasks would, with the settings of the environment (``HOSO_*``). Each result is one JSON line on stdout as
soon as it is known; the process exits 0 whatever the outcomes. Outage tests run it so that the retries
they watch are process_one's own, not an orchestrator's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from pipeline.usecases.archive import discover_batch, process_one
from pipeline.usecases.services import Services


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="support.batch")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--procedure")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    with Services() as services:
        for item in discover_batch(args.folder, args.procedure):
            result = process_one(item, services)
            print(json.dumps(dataclasses.asdict(result), ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
