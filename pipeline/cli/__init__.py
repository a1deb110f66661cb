"""The ``hoso`` command line: an interface over the use cases (the Typer app, ``pipeline.cli.app.app``), with its
Rich console views. This package imports nothing itself: the desk hand-off (``pipeline/cli/entry.py``, the
console entry point) must not pay for Typer."""
