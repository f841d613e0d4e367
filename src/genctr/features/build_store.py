"""Where a feature build reads its events and writes its tables: local paths or fsspec URIs.

Two parties touch a build. Spark (its executors) reads the events and writes the tables; this
process (the driver, or a Spark Connect client) checks the input, counts rows, moves the vocabulary
folders, writes ``stats.json`` and publishes the result. Both must reach the same files, and how
depends on where Spark runs and where the build goes:

    output                      Spark runs               Spark writes                 published by
    local path or file://       anywhere (1)             the path's temporary sibling  one rename (atomic)
    object store (s3://, gs://)  in this process (local)  a local temporary directory   fsspec upload (2)
    object store                on a cluster / Connect   the store, as s3a:// or gs:// (3)  fsspec copy (2)

(1) A cluster or a Connect server must see a local path at the same place (the same machine, or a
    mount shared by every node); when it does not, the first table Spark writes is missing here
    and the build stops with a ConfigError that says so.
(2) Object stores have no rename. A build there is complete when its ``stats.json`` exists: it is
    copied last, and a build being replaced loses its ``stats.json`` before anything else of it
    changes, so a reader that checks for it never takes a half-copied build for a whole one.
(3) Spark reaches S3 through Hadoop's S3A connector (``s3a://``), which the pyspark wheel does not
    bundle (hadoop-aws and the AWS SDK bundle are separate jars): a cluster that writes to S3 needs
    them on its classpath. A local master needs no connector: events are downloaded and the build
    uploaded through fsspec (s3fs), which is also the only way an s3:// build works out of the box.

Events given as a URI are read the same way round: downloaded into a scratch directory for a local
master, handed to Spark as its own URI otherwise.
"""
from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from genctr.atomic import publish, temp_path
from genctr.errors import ArtifactError, ConfigError, DataValidationError, describe

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

COMPLETE = "stats.json"  # genctr.features.layout: written last, so its presence marks a whole build
# fsspec scheme -> the scheme Hadoop's connector answers to (s3a: hadoop-aws; gs: the GCS connector)
SPARK_SCHEMES = {"s3": "s3a", "s3a": "s3a", "gs": "gs", "gcs": "gs", "abfs": "abfs", "abfss": "abfss"}
HADOOP_AWS_HINT = ("add the S3A connector to the Spark cluster's classpath (org.apache.hadoop:hadoop-aws at the "
                   "cluster's Hadoop version, with its AWS SDK bundle: spark.jars.packages or the image), or "
                   "build with a local master (features.spark_master local[*]), which reads and writes the "
                   "object store through fsspec instead")


@dataclass(frozen=True)
class Location:
    """One place as this process reaches it (``fs``, ``path``) and as Spark does (``spark``:
    a Hadoop URI; None where Spark has no connector, e.g. ``memory://``)."""

    uri: str  # as given, for messages
    fs: AbstractFileSystem
    path: str
    spark: str | None
    local: bool  # on this machine's filesystem

    @classmethod
    def parse(cls, where: str | os.PathLike[str]) -> Location:
        """A local path (``~`` expanded, made absolute; ``file://`` accepted) or an fsspec URI."""
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        text = os.fspath(where).strip()
        if not text:
            raise ConfigError("a build input or output location must not be empty")
        parts = urlsplit(text)
        if "://" not in text or parts.scheme == "file":
            path = Path(parts.path if parts.scheme == "file" else text).expanduser().absolute()
            return cls(text, LocalFileSystem(), str(path), path.as_uri(), True)
        try:
            fs, path = fsspec.core.url_to_fs(text)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"{describe(text)}: no filesystem for scheme {parts.scheme!r} ({exc})") from None
        path = path.rstrip("/")
        if not path or "/" not in path and parts.scheme in SPARK_SCHEMES:
            raise ConfigError(f"{describe(text)} names a bucket but no prefix inside it; expected "
                              f"{parts.scheme}://bucket/prefix/...")
        scheme = SPARK_SCHEMES.get(parts.scheme)
        return cls(text, fs, path, f"{scheme}://{path}" if scheme else None, False)

    def join(self, rel: str | PurePath) -> Location:
        rel = PurePosixPath(rel).as_posix()
        spark = f"{self.spark}/{rel}" if self.spark else None
        return Location(f"{self.uri.rstrip('/')}/{rel}", self.fs, f"{self.path}/{rel}", spark, self.local)


def events_location(events: str | os.PathLike[str], what: str = "events") -> Location:
    """The events' Location; DataValidationError if nothing is there, ConfigError if the store cannot be asked.
    ``what`` names the input in errors (``events``, ``behaviour log``)."""
    loc = Location.parse(events)
    try:
        found = loc.fs.exists(loc.path)
    except Exception as exc:  # broad on purpose: any client error (credentials, DNS, TLS) means "cannot ask"
        raise ConfigError(f"{what} at {loc.uri} cannot be reached ({type(exc).__name__}: "
                          f"{describe(str(exc), 200, raw=True)}); check the store's credentials and endpoint "
                          "(AWS_* variables for S3)") from None
    if not found:
        raise DataValidationError(f"{what} path {loc.path if loc.local else loc.uri} does not exist")
    return loc


def check_output(target: Location) -> None:
    """ConfigError unless a build can be written at ``target`` (checked before Spark starts)."""
    if target.local:
        out = Path(target.path)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"output {out} exists and is not a directory")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the directory of output {out}: {exc.strerror or exc}") from exc
        return
    bucket = target.path.split("/", 1)[0]
    try:
        found = target.fs.exists(bucket)
    except Exception as exc:  # broad on purpose, as in events_location
        raise ConfigError(f"build output {target.uri} is not reachable ({type(exc).__name__}: "
                          f"{describe(str(exc), 200, raw=True)}); check the store's credentials and endpoint") from None
    if not found:
        raise ConfigError(f"build output {target.uri}: bucket {bucket!r} does not exist or is not visible")


def connector_error(exc: BaseException, uri: str) -> ConfigError | None:
    """The ConfigError for a Spark failure that only means "Spark cannot reach this scheme", else None."""
    text = str(exc)
    java = getattr(exc, "java_exception", None)
    if java is not None:
        text += str(java.toString())
    if "S3AFileSystem not found" in text or ("No FileSystem for scheme" in text):
        scheme = urlsplit(uri).scheme
        hint = HADOOP_AWS_HINT if scheme == "s3a" else f"add the Hadoop connector for {scheme}:// to the cluster"
        return ConfigError(f"Spark cannot reach {uri}: it has no filesystem for {scheme}:// ({hint})")
    return None


@contextmanager
def spark_io(uri: str) -> Iterator[None]:
    """Turn "Spark has no connector for this URI" into a ConfigError naming the fix; other errors pass."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        yield
    except (PySparkException, Py4JJavaError) as exc:
        err = connector_error(exc, uri)
        if err is None:
            raise
        raise err from exc


class BuildWriter:
    """A build being written (see the module docstring for the three ways).

    Spark writes at :meth:`spark_uri`; this process reads and moves through ``fs`` at :meth:`path`;
    :meth:`publish` puts the finished build at ``target``; :meth:`discard` removes what is left.
    """

    def __init__(self, target: Location, spark_local: bool) -> None:
        from fsspec.implementations.local import LocalFileSystem

        self.target, self.spark_local = target, spark_local
        self._scratch: Path | None = None  # local: downloaded events, the staged build
        if target.local:
            self.mode = "rename"
            tmp = temp_path(target.path)  # a hidden sibling: the final rename stays on one filesystem
            self.work = Location(str(tmp), target.fs, str(tmp), tmp.as_uri(), True)
        elif spark_local:
            self.mode = "upload"
            staged = self.scratch() / "build"
            self.work = Location(str(staged), LocalFileSystem(), str(staged), staged.as_uri(), True)
        else:
            if target.spark is None:
                raise ConfigError(f"build output {target.uri}: Spark on a cluster or behind Spark Connect has no "
                                  f"connector for {urlsplit(target.uri).scheme}://; use s3://, gs://, a shared "
                                  "path, or a local master")
            self.mode = "copy"
            parent, name = posixpath.split(target.path)
            hidden = f".{name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"  # as genctr.atomic.temp_path
            self.work = Location(f"{parent}/{hidden}", target.fs, f"{parent}/{hidden}",
                                 f"{target.spark.rsplit('/', 1)[0]}/{hidden}", False)
        log.info("feature build: writing %s (%s mode)", target.uri, self.mode)

    @property
    def fs(self) -> AbstractFileSystem:
        return self.work.fs

    def scratch(self) -> Path:
        """This process's scratch directory (made on first use; removed by :meth:`cleanup`)."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="genctr-build-"))
        return self._scratch

    def spark_uri(self, rel: str | PurePath) -> str:
        uri = self.work.join(rel).spark
        assert uri is not None  # every work location has a Spark URI (checked in __init__)
        return uri

    def path(self, rel: str | PurePath) -> str:
        return self.work.join(rel).path

    def events_for_spark(self, events: Location, name: str = "events") -> str:
        """The URI Spark reads the events (or another input, ``name`` in the scratch directory) from:
        downloaded first when Spark runs here and they do not."""
        if events.local:
            return str(events.spark)
        if self.spark_local:
            dest = self.scratch() / name
            log.info("feature build: downloading %s %s to %s", name, events.uri, dest)
            events.fs.get(events.path, str(dest), recursive=events.fs.isdir(events.path))
            return dest.as_uri()
        if events.spark is None:
            raise ConfigError(f"events at {events.uri}: Spark on a cluster or behind Spark Connect has no connector "
                              f"for {urlsplit(events.uri).scheme}://; use s3://, gs:// or a shared path")
        return events.spark

    def _find(self, rel: str | PurePath) -> list[str]:
        """Files under ``rel``, listed afresh: Spark wrote them behind fsspec's back (its listings are cached)."""
        path = self.path(rel)
        self.fs.invalidate_cache(path)
        return list(self.fs.find(path)) if self.fs.exists(path) else []

    def check_visible(self, rel: str | PurePath) -> None:
        """ConfigError if a table Spark just wrote is not where this process can see it.

        Data files, not the directory: a driver on its own disk commits the job there (the
        directory and ``_SUCCESS`` appear) while the executors' part files stay on theirs.
        """
        if not any(f.endswith(".parquet") for f in self._find(rel)):
            raise ConfigError(
                f"Spark wrote {self.spark_uri(rel)} where this process cannot see it: its executors (or the Spark "
                f"Connect server) do not share this machine's filesystem; give the build an object-store URI "
                f"(s3://bucket/...) or a path mounted at the same place on every node, not {self.target.uri}")

    def rows(self, rel: str | PurePath) -> int:
        """Row count of a written table from its Parquet footers (no Spark job)."""
        import pyarrow.parquet as pq

        total = 0
        for f in self._find(rel):
            if f.endswith(".parquet"):
                with self.fs.open(f, "rb") as fh:
                    total += pq.ParquetFile(fh).metadata.num_rows
        return total

    def exists(self, rel: str | PurePath) -> bool:
        self.fs.invalidate_cache(self.path(rel))
        return bool(self.fs.exists(self.path(rel)))

    def move(self, src: str | PurePath, dst: str | PurePath) -> None:
        self.fs.mv(self.path(src), self.path(dst), recursive=True)

    def remove(self, rel: str | PurePath) -> None:
        self.fs.rm(self.path(rel), recursive=True)

    def write_text(self, rel: str | PurePath, text: str) -> None:
        if self.work.local:  # beside the rest, atomically: a crash never leaves half a stats.json
            from genctr.atomic import write_text

            write_text(self.path(rel), text)
        else:
            self.fs.pipe_file(self.path(rel), text.encode("utf-8"))  # one PUT: whole or absent

    def publish(self) -> None:
        """Put the finished build at the target (replacing an earlier one) and drop the scratch space."""
        if self.mode == "rename":
            publish(Path(self.work.path), Path(self.target.path))
        else:
            self.fs.invalidate_cache(self.work.path)
            copy_tree(self.fs, self.work.path, self.target.fs, self.target.path)
            if self.mode == "copy":
                self.fs.rm(self.work.path, recursive=True)
        self.cleanup()

    def discard(self) -> None:
        """Remove the unfinished build; the target keeps whatever it held before."""
        try:
            if self.mode == "rename":
                shutil.rmtree(self.work.path, ignore_errors=True)
            elif self.mode == "copy" and self.fs.exists(self.work.path):
                self.fs.rm(self.work.path, recursive=True)
        except Exception:  # broad on purpose: cleanup must not hide the error that caused it
            log.warning("could not remove the unfinished build at %s", self.work.uri, exc_info=True)
        self.cleanup()

    def cleanup(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def copy_tree(src_fs: AbstractFileSystem, src: str, dst_fs: AbstractFileSystem, dst: str) -> int:
    """Copy the build at ``src`` over ``dst``, ``stats.json`` last (see the module docstring); returns files copied.

    Hadoop's local checksum files (``.*.crc``) stay behind: they describe local files only.
    """
    from fsspec.implementations.local import LocalFileSystem

    rels = sorted(posixpath.relpath(f, src) for f in src_fs.find(src)
                  if not (posixpath.basename(f).startswith(".") and f.endswith(".crc")))
    if COMPLETE not in rels:
        raise ArtifactError(f"build at {src} is incomplete: it has no {COMPLETE}")
    if dst_fs.exists(dst):  # the old build stops being complete before any of it changes
        if dst_fs.exists(f"{dst}/{COMPLETE}"):
            dst_fs.rm(f"{dst}/{COMPLETE}")
        dst_fs.rm(dst, recursive=True)
    src_local, dst_local = isinstance(src_fs, LocalFileSystem), isinstance(dst_fs, LocalFileSystem)
    same = type(src_fs) is type(dst_fs) and not src_local
    for rel in sorted(rels, key=lambda r: r == COMPLETE):  # stable: the marker moves to the end
        a, b = f"{src}/{rel}", f"{dst}/{rel}"
        if dst_local:
            os.makedirs(posixpath.dirname(b), exist_ok=True)
        if same:
            dst_fs.copy(a, b)  # server-side on object stores: no bytes through this process
        elif src_local:
            dst_fs.put_file(a, b)
        elif dst_local:
            src_fs.get_file(a, b)
        else:
            dst_fs.pipe_file(b, src_fs.cat_file(a))
    log.info("copied %d files of the build to %s", len(rels), dst)
    return len(rels)


def download_build(uri: str, dest: str | os.PathLike[str]) -> Path:
    """Copy a complete build from ``uri`` to the local directory ``dest`` (atomically replaced).

    ArtifactError if ``uri`` holds no complete build (no ``stats.json``).
    """
    from fsspec.implementations.local import LocalFileSystem

    src = Location.parse(uri)
    if not src.fs.exists(f"{src.path}/{COMPLETE}"):
        raise ArtifactError(f"no complete feature build at {uri}: {COMPLETE} is missing")
    out = Path(dest).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out)
    try:
        copy_tree(src.fs, src.path, LocalFileSystem(), str(tmp))
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

