"""Offline evaluation: metrics (AUC, LogLoss, gAUC), DeLong's test, the champion gate, plots.

Import the submodules directly (``genctr.evaluation.metrics`` ...); ``plots`` pulls in
matplotlib, so nothing is imported here.
"""
