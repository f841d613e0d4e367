"""``python -m genctr`` = the ``genctr`` command."""
from genctr.cli import app

app(prog_name="genctr")
