"""The ``hoso`` command line: an interface over the use cases (``app``), with its Rich console views."""

from pipeline.cli.app import app

__all__ = ["app"]
