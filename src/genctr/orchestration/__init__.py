"""Kubeflow Pipelines from the library side: ``catalog`` (the pipelines by name, their parameters,
compiling), ``local`` (running through kfp.local), ``remote`` (submitting and scheduling on a host)."""
