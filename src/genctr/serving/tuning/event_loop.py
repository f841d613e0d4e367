"""The event loop the server runs on (``ServeConfig.event_loop``): uvloop or asyncio.

uvloop runs the same coroutines with less per-event CPU; responses are the same on both.
"""
from __future__ import annotations


def choose_event_loop(choice: str, grpc: bool = False) -> str:
    """``auto`` -> uvloop if installed (it comes with KServe's uvicorn[standard]), else asyncio;
    asyncio when the gRPC server runs too (grpc.aio is tested on asyncio's loop)."""
    if choice != "auto":
        return choice
    if grpc:
        return "asyncio"
    try:
        import uvloop  # noqa: F401 - only probes that uvloop is installed
    except ImportError:
        return "asyncio"
    return "uvloop"


def install_event_loop(loop: str) -> None:
    """Make ``loop`` the one ``ModelServer.start`` runs on.

    ``ModelServer.start`` runs ``asyncio.run()``, which ignores uvicorn's loop setting: for
    uvloop, install its policy (and a current loop: ``start()`` asks for one before
    ``asyncio.run``). asyncio needs nothing."""
    if loop != "uvloop":
        return
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
