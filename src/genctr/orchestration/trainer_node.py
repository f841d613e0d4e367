"""What every node of a distributed training job runs: stage in, ``torchrun genctr train``, stage out.

The job's pods share no disk with the pipeline step that submitted it, nor with each other, so
the build (and a fine-tune's pretrained model) travel through the storage root::

    python -m genctr.orchestration.trainer_node --stage pretrain \\
        --build-uri s3://bucket/genctr/train-jobs/<job>/build --out-uri s3://.../<job>/model \\
        -- --method genctr --model max_seq_len=200 --train epochs=1

1. copy the build (and ``--pretrained-uri``) from the storage root into ``--workdir``;
2. run ``torchrun --nnodes N --nproc-per-node P --node-rank R --master-addr A --master-port M
   -m genctr train <stage> --build <local> --out <local> [--pretrained <local>] <args after -->``,
   the rendezvous read from what the operator put in the environment: ``PET_NNODES``,
   ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK`` (both operators), ``PET_MASTER_ADDR`` /
   ``PET_MASTER_PORT`` (Trainer v2) or ``MASTER_ADDR`` / ``MASTER_PORT`` (Training Operator v1);
3. on node 0 only (where ``genctr train`` writes the artifact), copy the model directory to
   ``--out-uri``, ``config.json`` last so a reader never sees a half-copied model as complete.

The exit status is torchrun's: a failed rank fails its pod, and so the job.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from genctr.errors import ConfigError, GenCTRError, describe

log = logging.getLogger(__name__)
STAGES = ("pretrain", "finetune")
COMPLETE_FILE = "config.json"  # written last by the copy-out: its presence marks a whole model
CHUNK = 8 << 20  # bytes per read while copying: model weights need not fit in memory twice


@dataclass(frozen=True)
class Rendezvous:
    """This node's place in the job, from the operator's environment variables."""

    nnodes: int
    nproc_per_node: int
    node_rank: int
    master_addr: str
    master_port: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Rendezvous:
        def need(*names: str) -> str:
            for n in names:
                if env.get(n, "").strip():
                    return env[n].strip()
            raise ConfigError(f"{' or '.join(names)} is not set: this command runs inside a Kubeflow TrainJob or "
                              "PyTorchJob pod, whose operator sets it")

        def number(*names: str) -> int:
            text = need(*names)
            try:
                return int(text)
            except ValueError:
                raise ConfigError(f"{names[0]} must be an integer, got {describe(text)}") from None

        return cls(nnodes=number("PET_NNODES"), nproc_per_node=number("PET_NPROC_PER_NODE"),
                   node_rank=number("PET_NODE_RANK"), master_addr=need("PET_MASTER_ADDR", "MASTER_ADDR"),
                   master_port=number("PET_MASTER_PORT", "MASTER_PORT"))

    def torchrun(self) -> list[str]:
        """The launcher's own arguments (``python -m torch.distributed.run`` is ``torchrun``)."""
        return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={self.nnodes}",
                f"--nproc-per-node={self.nproc_per_node}", f"--node-rank={self.node_rank}",
                f"--master-addr={self.master_addr}", f"--master-port={self.master_port}"]


def train_command(stage: str, rdzv: Rendezvous, build: Path, out: Path, pretrained: Path | None,
                  args: Sequence[str]) -> list[str]:
    """``torchrun ... -m genctr train <stage> --build B --out O [--pretrained P] ARGS``."""
    if stage not in STAGES:
        raise ConfigError(f"stage must be one of {STAGES}, got {describe(stage)}")
    cmd = [*rdzv.torchrun(), "-m", "genctr", "train", stage, "--build", str(build), "--out", str(out)]
    if pretrained is not None:
        cmd += ["--pretrained", str(pretrained)]
    return [*cmd, *args]


def copy_tree(src: str, dst: str, last: str | None = None) -> int:
    """Copy every file under ``src`` to the same relative path under ``dst`` (fsspec URIs or local
    paths; a file named ``last`` goes last); return the number of files. Missing ``src`` is an error."""
    import fsspec

    sfs, spath = fsspec.core.url_to_fs(src)
    dfs, dpath = fsspec.core.url_to_fs(dst)
    files = sorted(f for f in sfs.find(spath) if not sfs.isdir(f))
    if not files:
        raise ConfigError(f"nothing to copy: {src} has no files")
    files.sort(key=lambda f: f.rsplit("/", 1)[-1] == last)  # stable: only ``last`` moves to the end
    for f in files:
        rel = f[len(spath.rstrip("/")) + 1:]
        target = f"{dpath.rstrip('/')}/{rel}"
        dfs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        with sfs.open(f, "rb") as r, dfs.open(target, "wb") as w:
            shutil.copyfileobj(r, w, CHUNK)
    return len(files)


def run_node(stage: str, build_uri: str, out_uri: str, pretrained_uri: str, workdir: Path, args: Sequence[str],
             env: Mapping[str, str] | None = None) -> int:
    """Stage in, train under torchrun, stage out on node 0; return the exit status."""
    rdzv = Rendezvous.from_env(os.environ if env is None else env)
    log.info("node %d of %d, %d process(es), rendezvous %s:%d", rdzv.node_rank, rdzv.nnodes, rdzv.nproc_per_node,
             rdzv.master_addr, rdzv.master_port)
    build, out = workdir / "build", workdir / "model"
    n = copy_tree(build_uri, str(build))
    log.info("build: %d files from %s", n, build_uri)
    pretrained = None
    if pretrained_uri:
        pretrained = workdir / "pretrained"
        copy_tree(pretrained_uri, str(pretrained))
    cmd = train_command(stage, rdzv, build, out, pretrained, args)
    log.info("running %s", " ".join(cmd))
    code = subprocess.run(cmd, check=False).returncode  # its output goes straight to the pod's log
    if code != 0:
        log.error("genctr train %s exited with %d", stage, code)
        return code
    if rdzv.node_rank == 0:
        if not (out / COMPLETE_FILE).is_file():
            log.error("genctr train %s succeeded but wrote no model at %s", stage, out)
            return 1
        n = copy_tree(str(out), out_uri, last=COMPLETE_FILE)
        log.info("model: %d files to %s", n, out_uri)
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The node command's arguments; ``train_args`` holds what follows ``--``."""
    parser = argparse.ArgumentParser(prog="python -m genctr.orchestration.trainer_node", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True, choices=STAGES)
    parser.add_argument("--build-uri", required=True, help="Feature build under the storage root.")
    parser.add_argument("--out-uri", required=True, help="Where node 0 copies the model artifact.")
    parser.add_argument("--pretrained-uri", default="", help="Pretrained artifact (finetune after pretraining).")
    parser.add_argument("--workdir", default="/tmp/genctr-train", help="Local scratch directory of this pod.")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then `genctr train <stage>` options.")
    ns = parser.parse_args(argv)
    ns.train_args = ns.train_args[1:] if ns.train_args[:1] == ["--"] else ns.train_args
    return ns


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    from genctr.logging_setup import setup_logging

    ns = parse_args(argv)
    setup_logging()
    try:
        return run_node(ns.stage, ns.build_uri, ns.out_uri, ns.pretrained_uri, Path(ns.workdir), ns.train_args, env)
    except GenCTRError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
