"""Model artifacts: a directory with ``model.safetensors`` (weights, never a pickle), ``config.json``
(format version, model kind and architecture), ``vocab/`` and ``items/`` (Parquet) and ``metrics.json``.

* :mod:`genctr.artifacts.files` — writing and reading the files, each read checked (ArtifactError)
* :mod:`genctr.artifacts.kinds` — the model kinds and how each is rebuilt
* :mod:`genctr.artifacts.load` — :func:`load_model`, :func:`max_seq_len_of`
"""
