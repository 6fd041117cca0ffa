"""The `rtk-archive` command line: parsing, logging, output, one module per command family."""

from pipeline.cli.app import main

__all__ = ["main"]
