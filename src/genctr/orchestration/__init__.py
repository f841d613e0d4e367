"""Kubeflow Pipelines from the library side: ``catalog`` (the pipelines by name, their parameters,
compiling), ``local`` (running through kfp.local), ``remote`` (submitting and scheduling on a host),
and distributed training steps: ``trainer_job`` (TrainJob / PyTorchJob manifests), ``job_runner``
(submit, wait, pod logs), ``trainer_node`` (what each job node runs), ``training_step`` (a step in
its own pod or on a job)."""
