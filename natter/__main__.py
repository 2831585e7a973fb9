"""``python -m natter ...`` is the ``natter`` command."""

from natter.cli import app

app()
