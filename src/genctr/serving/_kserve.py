"""Import KServe without letting it parse this process's command line.

``kserve.model_server`` runs ``argparse.parse_known_args()`` on ``sys.argv`` at import time
(and ``import kserve`` imports it). Inside another program (the ``genctr`` CLI, pytest, a
benchmark) that parse can fail or misread flags: argparse accepts prefixes, so ``--work DIR``
is read as KServe's ``--workers``. genctr passes every server setting to ``ModelServer``
explicitly, so KServe's import-time parse is made to see no arguments.
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
