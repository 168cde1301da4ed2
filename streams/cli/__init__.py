"""The ``streams`` command: ``main.py`` builds the parser, one module per command group registers its sub-commands."""
from streams.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
