"""``python -m genctr.cli`` = the ``genctr`` command."""
from genctr.cli.main import app

app(prog_name="genctr")
