"""``python -m lifelong`` runs the command line."""

from lifelong.cli import entry_point

entry_point()
