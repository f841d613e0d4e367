"""Data steps: ingest events, GX checks, Spark feature build, Feast materialisation."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Output

from components.images import component


@component
def ingest_events(
    events: Output[Dataset],
    behaviours: Output[Dataset],
    source: str = "movielens",
    path: str = "",
    category: str = "combo",
    synthetic_events: int = 200_000,
    synthetic_users: int = 2_000,
    synthetic_items: int = 5_000,
    seed: int = 0,
    behaviour_log: bool = False,
    behaviour_path: str = "",
):
    """Read a source (movielens | taobao | synthetic | events) into canonical events Parquet.

    Args:
        events: Output canonical events (one Parquet file).
        behaviours: Output behaviour log (one Parquet file, genctr.data.behaviours); always written,
            without rows unless ``behaviour_log`` (the build then uses the clicks alone).
        source: Source adapter; ``events`` = a file already in the canonical schema.
        path: Source file/directory ('' = the bundled MovieLens data).
        category: MovieLens category mapping: ``combo`` or ``first`` genre.
        synthetic_events: Synthetic world: impressions to generate.
        synthetic_users: Synthetic world: users.
        synthetic_items: Synthetic world: items.
        seed: Random seed of the synthetic world / sampling.
        behaviour_log: Also ingest the source's behaviour log (movielens: every rating; taobao: the
            cart/fav/buy rows; events: ``behaviour_path``); synthetic has none (an error).
        behaviour_path: Source ``events``: the behaviour log file ('' = <stem>.behaviours.parquet beside ``path``).
    """
    from genctr import workflow
    from genctr.config import DataConfig
    from genctr.logging_setup import setup_logging

    setup_logging()
    cfg = DataConfig(source=source, path=path, category=category, synthetic_events=synthetic_events,
                     synthetic_users=synthetic_users, synthetic_items=synthetic_items, seed=seed,
                     behaviour_log=behaviour_log, behaviour_path=behaviour_path)
    result = workflow.export_events(cfg, events.path, behaviours_out=behaviours.path)
    events.metadata.update(result.summary)
    behaviours.metadata.update({"behaviour_log": behaviour_log})


@component
def validate_events(events: Input[Dataset], report_html: Output[HTML], report_md: Output[Markdown]):
    """Great Expectations events suite; a failed expectation fails the task (and so the run).

    Args:
        events: Canonical events Parquet.
        report_html: GX report (HTML), written whether the suite passes or fails.
        report_md: The same report as Markdown.
    """
    from genctr import workflow
    from genctr.logging_setup import setup_logging

    setup_logging()
    workflow.validate_with_reports("events", events.path, report_html.path, report_md.path)  # the reports, pass or fail


@component
def build_features(
    events: Input[Dataset],
    build: Output[Dataset],
    behaviours: Input[Dataset] = None,
    max_seq_len: int = 200,
    spark_master: str = "local[*]",
    spark_submit: str = "local",
    spark_build_uri: str = "",
    spark_namespace: str = "genctr",
    spark_image: str = "",
):
    """Spark feature build: samples, per-user histories, vocabularies, time-ordered splits.

    Args:
        events: Canonical events Parquet.
        build: Output build directory (genctr.features.layout); its metadata holds the stats.
        behaviours: Optional behaviour log (the ingest step's); its rows join the clicked impressions as
            behaviours. None or a log without rows: the clicks alone.
        max_seq_len: L, the number of most recent behaviours a model sees.
        spark_master: Spark master URL: ``local[*]`` (Spark inside the pod), ``spark://host:port``
            (a standalone cluster this pod drives) or ``sc://host:port`` (Spark Connect).
        spark_submit: ``local`` (Spark as ``spark_master`` says) or ``operator`` (a SparkApplication
            for the Kubeflow Spark Operator; ``spark_master`` is then not used).
        spark_build_uri: Object-store URI that a cluster's executors or the SparkApplication's pods
            read and write (events, build) when Spark does not run inside the pod ('' = under
            the object-store storage root, named by the events artifact). Unused for a local master.
        spark_namespace: Namespace of the SparkApplication (``operator``).
        spark_image: Image of the SparkApplication's pods ('' = the genctr CPU image).
    """
    import json

    from genctr.config import FeatureConfig
    from genctr.features.build_step import run_build_step
    from genctr.logging_setup import setup_logging

    setup_logging()
    stats = run_build_step(events.path, events.uri, build.path, FeatureConfig(max_seq_len=max_seq_len,
                                                                              spark_master=spark_master),
                           spark_submit=spark_submit, shared_uri=spark_build_uri, namespace=spark_namespace,
                           image=spark_image, behaviours_path=behaviours.path if behaviours else "",
                           behaviours_uri=behaviours.uri if behaviours else "")
    build.metadata.update(json.loads(json.dumps(stats, default=str)))


@component
def validate_samples(build: Input[Dataset], report_html: Output[HTML], report_md: Output[Markdown]):
    """Great Expectations samples suite (labels, seq_len bounds, no leakage, click rate, rows).

    Args:
        build: Feature build directory.
        report_html: GX report (HTML), written whether the suite passes or fails.
        report_md: The same report as Markdown.
    """
    from genctr import workflow
    from genctr.logging_setup import setup_logging

    setup_logging()
    workflow.validate_with_reports("samples", build.path, report_html.path, report_md.path)  # the reports, pass or fail


@component
def materialize_features(
    build: Input[Dataset],
    feast_repo: Output[Artifact],
    online_store: str = "sqlite",
    redis_url: str = "localhost:6379",
    feast_registry: str = "",
    publish_to: str = "",
):
    """Feast: publish the build's Feast tables, apply the definitions, materialise online.

    Args:
        build: Feature build directory.
        feast_repo: Output Feast working directory (feature_store.yaml; the SQLite store).
        online_store: ``sqlite`` (embedded) or ``redis`` (production).
        redis_url: Redis connection string when ``online_store`` is ``redis``.
        feast_registry: Feast registry path or URI, shared by runs and read by serving
            ('' = inside ``feast_repo``); the storage step derives <root>/feast/<online>/registry.db.
        publish_to: Where the build's Feast tables are copied for the registry's sources
            ('' = the build artifact); the storage step derives <root>/builds/<run id>.
    """
    from genctr import workflow
    from genctr.logging_setup import setup_logging

    setup_logging()
    result = workflow.materialize(build.path, feast_repo.path, online=online_store, redis_url=redis_url,
                                  registry=feast_registry, sources=publish_to)
    feast_repo.metadata.update(result.summary)
