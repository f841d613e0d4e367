"""Import KServe without letting it parse this process's command line.

``kserve.model_server`` runs ``argparse.parse_known_args()`` on ``sys.argv`` at import time
(and ``import kserve`` imports it). Inside another program (the ``genctr`` CLI, pytest, a
benchmark) that parse can fail or misread flags: argparse accepts prefixes, so ``--work DIR``
is read as KServe's ``--workers``. genctr passes every server setting to ``ModelServer``
explicitly, so KServe's import-time parse is made to see no arguments.

Importing this module is the guard: every genctr module that imports ``kserve`` at its top imports
this module first (above an ``# isort: split``), so the parse never sees a caller's flags, whichever
genctr module is imported first. The package ``genctr.serving`` itself does not import KServe: the
light modules a deployment needs (the state file, the arm split, the Feast config) stay light.
"""
from __future__ import annotations

import sys


def import_kserve() -> None:
    """Import ``kserve`` (once) with an empty argument list."""
    if "kserve.model_server" in sys.modules:
        return
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve  # noqa: F401 - imported for its import-time set-up, with sys.argv emptied
    finally:
        sys.argv = argv


import_kserve()
