"""TorchScript tracing and freezing of a loaded CTR model (``ServeConfig.jit``).

The frozen graph fuses ops (linear + ReLU), so its float rounding differs from the eager
model's; :func:`traced_or_eager` serves it only when it reproduces the eager logits within
``MAX_LOGIT_DIFF`` on batches of several shapes, else the eager model is served unchanged.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

MAX_LOGIT_DIFF = 1e-4  # largest |traced - eager| logit difference that is served


def example_batch(n: int, width: int, sizes: dict[str, int], device: torch.device, gen: torch.Generator,
                  shared: bool = True) -> dict[str, torch.Tensor]:
    """A random valid batch (ids < vocabulary sizes); ``shared``: one user's history expanded."""
    def ids(size: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(2, max(3, size), shape, generator=gen)

    rows = 1 if shared else n
    lengths = torch.randint(0, width + 1, (rows,), generator=gen)
    hist = {"hist_item": ids(sizes["item"], (rows, width)), "hist_cate": ids(sizes["category"], (rows, width))}
    hist = {k: v.masked_fill(torch.arange(width) >= lengths[:, None], 0) for k, v in hist.items()}
    batch = {"item": ids(sizes["item"], (n,)), "cate": ids(sizes["category"], (n,)),
             "price": torch.rand(n, generator=gen) * 10, "user": ids(sizes["user"], (rows,)).expand(n),
             "hist_item": hist["hist_item"].expand(n, width), "hist_cate": hist["hist_cate"].expand(n, width),
             "hist_len": lengths.expand(n)}
    return {k: v.to(device) for k, v in batch.items()}


def traced_or_eager(model: torch.nn.Module, sizes: dict[str, int], max_seq_len: int,
                    device: torch.device) -> torch.nn.Module:
    """TorchScript-trace and freeze ``model`` for inference, if it reproduces the eager model on
    batches of other shapes (N, history width, shared/unshared rows); else ``model`` unchanged."""
    import warnings

    gen = torch.Generator().manual_seed(0)
    example = example_batch(8, max_seq_len, sizes, device, gen)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python
            traced = torch.jit.trace(model, (example,), strict=False, check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            worst = 0.0
            for n, width, shared in ((1, 1, True), (100, max_seq_len, True), (37, max(1, max_seq_len // 2), True),
                                     (5, max_seq_len, False), (64, 1, False)):
                batch = example_batch(n, width, sizes, device, gen, shared)
                worst = max(worst, float((frozen(batch) - model(batch)).abs().max()))
    except Exception as exc:  # broad on purpose: any tracing failure means: serve the eager model
        log.warning("TorchScript trace failed (%s: %s); serving the eager model", type(exc).__name__, exc)
        return model
    if worst > MAX_LOGIT_DIFF:
        log.warning("TorchScript trace differs from the eager model by %.2g; serving the eager model", worst)
        return model
    log.info("serving a TorchScript-frozen model (max |traced - eager| logit difference %.1g)", worst)
    return frozen
