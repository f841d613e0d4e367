"""``genctr doctor``: is this machine (or pod) ready to run genctr? Each check says what to fix.

Checks, in order: ``python`` (version, genctr), ``java`` (17+, for Spark), ``spark`` (a real
``local[1]`` session started in a subprocess, under a timeout), ``feast`` (the store config loads
through :class:`genctr.serving.online.FeastConfig`), ``redis`` (a PING, when the Feast config's
online store is Redis or ``redis_url`` is given), ``registry`` (the registry URI can be written,
read back and listed), ``kfp`` (one HTTP request to the Pipelines API's health endpoint, when a
host is given). A check that does not apply is ``skip``; :func:`required_failed` tells whether
the run should exit non-zero.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from genctr.errors import ConfigError, GenCTRError

if TYPE_CHECKING:
    from genctr.orchestration.connection import KFPConnection
    from genctr.serving.online import FeastConfig

CHECKS = ("python", "java", "spark", "feast", "redis", "registry", "kfp")
MIN_JAVA = 17  # Spark 4 runs on Java 17 and 21
OK, FAIL, SKIP = "ok", "fail", "skip"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table: ``status`` is ok | fail | skip; ``fix`` says what to do on fail."""

    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class DoctorConfig:
    registry: str = ""  # registry root, path or fsspec URI ("" = $GENCTR_HOME/registry)
    feast_repo: str = ""  # directory with the Feast config ("" = the bundled feature_repo/)
    feast_config: str = "feature_store.yaml"  # file name in feast_repo (feature_store.redis.yaml: Redis)
    redis_url: str = ""  # host:port[,password=...][,ssl=true][,db=N]; checked when given or configured
    kfp: KFPConnection | None = None  # checked when given
    spark_timeout_s: float = 120.0
    kfp_timeout_s: float = 5.0
    skip: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.skip) - set(CHECKS))
        if unknown:
            raise ConfigError(f"--skip: unknown check(s) {unknown}; known: {list(CHECKS)}")
        if self.spark_timeout_s <= 0 or self.kfp_timeout_s <= 0:
            raise ConfigError("doctor timeouts must be > 0 seconds")


def run_checks(cfg: DoctorConfig) -> list[Check]:
    """Every check of :data:`CHECKS`, in order (skipped ones included, as ``skip``)."""
    steps: dict[str, Callable[[DoctorConfig], Check]] = {
        "python": check_python, "java": check_java, "spark": check_spark, "feast": check_feast,
        "redis": check_redis, "registry": check_registry, "kfp": check_kfp}
    return [Check(name, SKIP, "skipped (--skip)") if name in cfg.skip else steps[name](cfg) for name in CHECKS]


def required_failed(checks: list[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


def format_table(checks: list[Check]) -> list[str]:
    """The table as text lines: check, status, what was found; a ``fix:`` line under each failure."""
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  status  detail"]
    for c in checks:
        lines.append(f"{c.name:<{width}}  {c.status.upper() if c.status == FAIL else c.status:<6}  {c.detail}")
        if c.status == FAIL and c.fix:
            lines.append(f"{'':<{width}}  fix:    {c.fix}")
    return lines


# -- the checks ---------------------------------------------------------------------------------

def check_python(cfg: DoctorConfig) -> Check:
    from genctr import __version__

    version = ".".join(map(str, sys.version_info[:3]))
    return Check("python", OK, f"Python {version}, genctr {__version__} ({sys.executable})")


def _java() -> str | None:
    import os

    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def check_java(cfg: DoctorConfig) -> Check:
    fix = f"install Java {MIN_JAVA} or 21 (apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME"
    java = _java()
    if java is None:
        return Check("java", FAIL, "no java on PATH or in $JAVA_HOME/bin", fix)
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("java", FAIL, f"{java} -version did not run: {exc}", fix)
    text = out.stderr + out.stdout
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not match:
        return Check("java", FAIL, f"cannot read the version from `{java} -version`: {text.strip()[:120]!r}", fix)
    major = int(match.group(1))
    major = int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8
    first = text.strip().splitlines()[0] if text.strip() else ""
    if major < MIN_JAVA:
        return Check("java", FAIL, f"Java {major} at {java} ({first}); Spark 4 needs {MIN_JAVA}+", fix)
    return Check("java", OK, f"Java {major} at {java} ({first})")


_SPARK_PROBE = """
import json, time
t0 = time.perf_counter()
from genctr.features.spark_session import get_spark
spark = get_spark("local[1]", app_name="genctr-doctor", shuffle_partitions=1, driver_memory="512m", log_level="ERROR")
n = spark.range(10).count()
print(json.dumps({"version": spark.version, "count": n, "seconds": time.perf_counter() - t0}))
spark.stop()
"""


def check_spark(cfg: DoctorConfig) -> Check:
    fix = ("Spark needs Java 17+ (see the java line) and pyspark installed in this interpreter; "
           "on a slow machine raise --spark-timeout")
    try:
        out = subprocess.run([sys.executable, "-c", _SPARK_PROBE], capture_output=True, text=True,
                             timeout=cfg.spark_timeout_s)
    except subprocess.TimeoutExpired:
        return Check("spark", FAIL, f"no local Spark session within {cfg.spark_timeout_s:.0f} s", fix)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = [line for line in out.stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
        return Check("spark", FAIL, f"a local Spark session did not start (exit {out.returncode}): {tail[0][:200]}",
                     fix)
    info = json.loads(lines[-1])
    if info.get("count") != 10:
        return Check("spark", FAIL, f"Spark counted {info.get('count')} rows of range(10)", fix)
    return Check("spark", OK, f"Spark {info['version']}: local session started and ran a job in "
                              f"{info['seconds']:.1f} s")


def _feast_config(cfg: DoctorConfig) -> tuple[FeastConfig, str]:
    """The Feast config (genctr's FeastConfig) and its online store type."""
    import yaml

    from genctr.paths import repo_root
    from genctr.serving.online import FeastConfig

    repo = cfg.feast_repo or str(repo_root() / "feature_repo")
    feast = FeastConfig(repo_path=repo, config_file=cfg.feast_config)
    raw = yaml.safe_load(feast.config_path.read_text()) or {}
    store = (raw.get("online_store") or {}) if isinstance(raw, dict) else {}
    return feast, str(store.get("type", "sqlite") if isinstance(store, dict) else store)


def check_feast(cfg: DoctorConfig) -> Check:
    fix = ("pass --feast-repo (the directory `genctr features materialize` wrote, or the feature repo) and "
           "--feast-config (feature_store.yaml | feature_store.redis.yaml); fix the file the detail names")
    try:
        feast, online = _feast_config(cfg)
        store = feast.open()
    except GenCTRError as exc:
        return Check("feast", FAIL, str(exc), fix)
    except Exception as exc:  # noqa: BLE001 - whatever Feast raises for a config it cannot use
        return Check("feast", FAIL, f"Feast cannot open the store: {type(exc).__name__}: {exc}"[:300], fix)
    return Check("feast", OK, f"{feast.config_path}: project {store.project}, online store {online}")


def _redis_target(cfg: DoctorConfig) -> str | None:
    if cfg.redis_url:
        return cfg.redis_url
    try:
        feast, online = _feast_config(cfg)
    except GenCTRError:
        return None  # the feast line reports it
    if online != "redis":
        return None
    import os

    import yaml

    raw = yaml.safe_load(os.path.expandvars(feast.config_path.read_text())) or {}
    return str((raw.get("online_store") or {}).get("connection_string") or "")


def parse_redis_url(url: str) -> dict[str, object]:
    """Feast's Redis connection string ``host:port[,password=...][,ssl=true][,db=N]`` as redis-py kwargs."""
    head, *opts = [part.strip() for part in url.split(",")]
    host, _, port = head.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"Redis connection string {url!r} is not host:port[,password=...][,ssl=true][,db=N]")
    kwargs: dict[str, object] = {"host": host, "port": int(port)}
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "password":
            kwargs["password"] = value
        elif key == "ssl":
            kwargs["ssl"] = value.lower() in ("true", "1", "yes")
        elif key == "db" and value.isdigit():
            kwargs["db"] = int(value)
    return kwargs


def check_redis(cfg: DoctorConfig) -> Check:
    target = _redis_target(cfg)
    if target is None:
        return Check("redis", SKIP, "not configured (the Feast online store is not Redis; --redis-url not given)")
    fix = ("start Redis or point --redis-url / $GENCTR_REDIS_CONNECTION_STRING at it "
           "(host:port[,password=...][,ssl=true])")
    if not target or "${" in target:
        return Check("redis", FAIL, "the Feast config's Redis connection string is empty or an unset variable", fix)
    try:
        import redis

        kwargs = parse_redis_url(target)
        # the ignore below: parse_redis_url returns dict[str, object]; redis.Redis types each keyword
        client = redis.Redis(socket_timeout=3, socket_connect_timeout=3, **kwargs)  # type: ignore[arg-type]
        client.ping()
        info: dict[str, object] = client.info("server")  # type: ignore[assignment]  # sync client: a dict
        version = info.get("redis_version", "?")
    except ConfigError as exc:
        return Check("redis", FAIL, str(exc), fix)
    except Exception as exc:  # noqa: BLE001 - redis-py's connection / auth errors
        return Check("redis", FAIL, f"no PING answer from {target.split(',')[0]}: {type(exc).__name__}: {exc}", fix)
    return Check("redis", OK, f"Redis {version} at {target.split(',')[0]} answered PING")


def check_registry(cfg: DoctorConfig) -> Check:
    """Open the registry through genctr.registry; for a path or fsspec URI also write, read back and
    delete a probe file (the MLflow / Kubeflow backends are checked by listing their models)."""
    from genctr.paths import home
    from genctr.registry import URI_HELP, FsspecRegistry, backend_for, open_registry

    uri = cfg.registry or str(home() / "registry")
    fix = (f"give --registry {URI_HELP}, reachable and writable from here (object stores: s3fs / gcsfs installed "
           "and credentials set, see manifests/storage-secret.yaml)")
    try:
        backend = backend_for(uri)
        written = ""
        if issubclass(backend, FsspecRegistry):
            problem = _probe_write(uri)
            if problem:
                return Check("registry", FAIL, problem, fix)
            written = "writable, "
        names = open_registry(uri).names()
    except GenCTRError as exc:
        return Check("registry", FAIL, f"{uri}: {exc}", fix)
    except (ValueError, ImportError) as exc:  # fsspec: unknown protocol / its package missing
        return Check("registry", FAIL, f"{uri}: {exc}", fix)
    except Exception as exc:  # noqa: BLE001 - OSError, PermissionError, the store's client errors
        return Check("registry", FAIL, f"cannot use {uri}: {type(exc).__name__}: {exc}", fix)
    return Check("registry", OK, f"{uri} ({backend.__name__}) is {written}reachable: {len(names)} model name(s)")


def _probe_write(uri: str) -> str:
    """'' when a probe file can be written under ``uri``, read back and removed; else what failed."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    root = root.rstrip("/") or "/"
    path = f"{root}/.genctr-doctor-{uuid.uuid4().hex}"
    try:
        fs.makedirs(root, exist_ok=True)
        fs.pipe_file(path, b"ok")
        readback = fs.cat_file(path)
        fs.rm_file(path)
    except (OSError, PermissionError) as exc:
        return f"cannot write {uri}: {type(exc).__name__}: {exc}"
    return "" if readback == b"ok" else f"{uri}: a probe file read back as {readback[:20]!r}"


def check_kfp(cfg: DoctorConfig) -> Check:
    if cfg.kfp is None:
        return Check("kfp", SKIP, "no --kfp-host given")
    from genctr.orchestration.connection import KFPConnectionError, probe

    started = time.perf_counter()
    try:
        answer = probe(cfg.kfp, cfg.kfp_timeout_s)
    except KFPConnectionError as exc:
        return Check("kfp", FAIL, exc.problem, exc.fix)
    mode = "multi-user" if answer.get("multi_user") or answer.get("multiUser") else "single-user"
    return Check("kfp", OK, f"{cfg.kfp.host} answered its health check in {time.perf_counter() - started:.2f} s "
                            f"({mode}; credentials: {cfg.kfp.auth_mode()})")
