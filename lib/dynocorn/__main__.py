"""`python -m dynocorn`."""

from dynocorn.cli import run

run()
