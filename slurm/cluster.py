"""A real Slurm cluster of N nodes on this machine, on loopback: for trying the harness and for tests.

One munged, one slurmctld and one `slurmd -N <node>` per node, every daemon with its own
files under one git-ignored folder (default `.cluster/`), so nothing in /etc or /var is
touched. Nodes share this host (NodeHostname=localhost) and differ by port. Clients find
the cluster through `SLURM_CONF=<dir>/slurm.conf` (`bin/cluster env` prints the export).

`up` is idempotent: a running cluster with the same shape is left alone; a different shape
is restarted. Slurm 22.05 (Debian bookworm) is what this was written and tested against.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from contract import envnames
from contract.config import check_name
from contract.errors import ConfigError
from contract.paths import ROOT

DEFAULT_DIR = os.path.join(ROOT, ".cluster")
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "sinfo")
MISSING = ("Slurm is not installed (missing: {missing}). On Debian/Ubuntu: "
           "sudo apt-get install -y slurm-wlm munge   (then: bin/cluster up)")
EXIT_MISSING = 3  # distinct from bad input (2): the tests skip (or fail in CI) on it


@dataclass(frozen=True)
class Shape:
    nodes: int = 4
    prefix: str = "tsn"
    partition: str = "ts"
    port: int = 17200  # slurmctld; node i listens on port + i
    cpus: int = 2
    memory_mb: int = 2000

    def node_names(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(1, self.nodes + 1)]

    def validate(self) -> None:
        if not 1 <= self.nodes <= 64:
            raise ConfigError(f"invalid nodes {self.nodes}: use 1..64")
        check_name("node prefix", self.prefix)
        check_name("partition", self.partition)
        if not 1024 <= self.port <= 65000 - self.nodes:
            raise ConfigError(f"invalid port {self.port}: use 1024..{65000 - self.nodes}")
        if self.cpus < 1:
            raise ConfigError(f"invalid cpus {self.cpus}: must be >= 1")


def missing_binaries() -> list[str]:
    return [b for b in DAEMONS if shutil.which(b) is None and not os.path.exists(f"/usr/sbin/{b}")]


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class Cluster:
    def __init__(self, path: str = DEFAULT_DIR) -> None:
        self.dir = os.path.abspath(path)
        self.conf = os.path.join(self.dir, "slurm.conf")

    # ---- files ------------------------------------------------------------
    def _p(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": self.conf}

    def saved_shape(self) -> Shape | None:
        try:
            with open(self._p("shape.json")) as f:
                return Shape(**json.load(f))
        except (OSError, ValueError, TypeError):
            return None

    def _render_conf(self, shape: Shape) -> str:
        from slurm.render import environment

        nodes = [{"name": n, "port": shape.port + i} for i, n in enumerate(shape.node_names(), 1)]
        user = getpass.getuser()
        return environment().get_template("slurm.conf.j2").render(
            nodes=nodes, dir=self.dir, cluster_name="torchswitch", host=socket.gethostname().split(".")[0],
            ctld_port=shape.port, user=user, cpus=shape.cpus, memory_mb=shape.memory_mb,
            partition=shape.partition)

    # ---- processes ----------------------------------------------------------
    def _pid(self, name: str) -> int | None:
        try:
            with open(self._p("run", name)) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def _pidfiles(self) -> list[str]:
        run = self._p("run")
        return sorted(os.listdir(run)) if os.path.isdir(run) else []

    def running(self) -> dict[str, int | None]:
        shape = self.saved_shape()
        names = ["munged.pid", "slurmctld.pid"] + [f"slurmd-{n}.pid" for n in (shape.node_names() if shape else [])]
        return {n: self._pid(n) for n in names}

    def is_up(self) -> bool:
        return self.saved_shape() is not None and all(self.running().values())

    def _run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=60, **kw)

    def _start_munge(self) -> None:
        mdir = self._p("munge")
        os.makedirs(mdir, exist_ok=True)
        key = os.path.join(mdir, "munge.key")
        if not os.path.exists(key):
            with open(key, "wb") as f:
                f.write(os.urandom(128))
        os.chmod(key, 0o400)
        argv = [_exe("munged"), f"--socket={mdir}/munge.socket", f"--key-file={key}",
                f"--pid-file={self._p('run', 'munged.pid')}", f"--log-file={self._p('log', 'munged.log')}",
                f"--seed-file={mdir}/munged.seed"]
        if os.geteuid() == 0:
            # munged refuses to run as root; run it as the `munge` user the Debian package creates.
            try:
                pw = pwd.getpwnam("munge")
            except KeyError as e:
                raise RuntimeError("user 'munge' missing: install the Debian package munge") from e
            for path in (mdir, key, self._p("log"), self._p("run")):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            os.chmod(mdir, 0o755)  # clients of any user must reach the socket
            argv = ["runuser", "-u", "munge", "--", *argv]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"munged failed to start: {out.stderr.strip() or out.stdout.strip()} "
                               f"(log: {self._p('log', 'munged.log')})")

    def up(self, shape: Shape, quiet: bool = False) -> None:
        shape.validate()
        missing = missing_binaries()
        if missing:
            raise FileNotFoundError(MISSING.format(missing=", ".join(missing)))
        if self.is_up() and self.saved_shape() == shape:
            if not quiet:
                print(f"cluster already up: {shape.nodes} node(s), partition {shape.partition} ({self.dir})")
            return
        if any(self.running().values()) or self._pidfiles():
            self.down(quiet=True)
        for sub in ("run", "log", "state", "spool", "munge"):
            os.makedirs(self._p(sub), exist_ok=True)
        # The controller's state is kept across down/up: job ids keep counting, so logs/sbatch/<s>-j<id>/
        # of an earlier cluster is never reused (`down` cancels every job, so none comes back to life).
        for n in shape.node_names():
            os.makedirs(self._p("spool", n), exist_ok=True)
        os.makedirs(os.path.join(ROOT, "logs", "sbatch"), exist_ok=True)  # output folder of slurm/*.sbatch
        with open(self.conf, "w") as f:
            f.write(self._render_conf(shape))
        with open(self._p("shape.json"), "w") as f:
            json.dump(asdict(shape), f)
        self._start_munge()
        self._daemon([_exe("slurmctld"), "-f", self.conf], "slurmctld")
        for n in shape.node_names():
            self._daemon([_exe("slurmd"), "-f", self.conf, "-N", n], f"slurmd {n}")
        self._wait_idle(shape)
        if not quiet:
            print(f"cluster up: nodes {','.join(shape.node_names())} in partition {shape.partition}, "
                  f"slurmctld on port {shape.port}; state in {self.dir}")
            print(f"use it from a shell with: export SLURM_CONF={self.conf}")

    def _daemon(self, argv: list[str], what: str) -> None:
        out = self._run(argv)
        if out.returncode != 0:
            raise RuntimeError(f"{what} failed to start: {(out.stderr or out.stdout).strip()} "
                               f"(logs in {self._p('log')})")

    def _wait_idle(self, shape: Shape, timeout_s: float = 60) -> None:
        deadline = time.time() + timeout_s
        states: dict[str, str] = {}
        while time.time() < deadline:
            out = self._run(["sinfo", "-h", "-N", "-o", "%N %T"])
            if out.returncode == 0:
                states = dict(line.split()[:2] for line in out.stdout.splitlines() if line.strip())
                if all(states.get(n, "").rstrip("*") in ("idle", "mixed", "allocated") for n in shape.node_names()):
                    return
            time.sleep(0.5)
        raise RuntimeError(f"nodes did not become idle within {timeout_s:.0f} s: {states or 'no answer'} "
                           f"(logs in {self._p('log')})")

    def down(self, quiet: bool = False) -> None:
        if os.path.exists(self.conf) and self._pid("slurmctld.pid"):
            self._run(["scancel", "--quiet", "--full", "--state=PENDING,RUNNING,SUSPENDED"])
            self._run(["scancel", "--quiet", "--full"])
        pids = {}
        order = [n for n in self._pidfiles() if n.startswith("slurmd-")] + ["slurmctld.pid", "munged.pid"]
        for name in order:
            pid = self._pid(name)
            if pid:
                os.kill(pid, signal.SIGTERM)
                pids[name] = pid
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(p) for p in pids.values()):
            time.sleep(0.2)
        for pid in pids.values():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        for name in self._pidfiles():
            os.unlink(self._p("run", name))
        if not quiet:
            print(f"cluster down ({len(pids)} daemon(s) stopped)" if pids else "cluster was not running")

    def status(self) -> int:
        shape = self.saved_shape()
        procs = self.running()
        if shape is None or not any(procs.values()):
            print(f"cluster down (state folder {self.dir})")
            return 1
        dead = [n for n, p in procs.items() if not p]
        print(f"cluster {'up' if not dead else 'DEGRADED'}: {shape.nodes} node(s), partition {shape.partition}, "
              f"SLURM_CONF={self.conf}")
        if dead:
            print(f"  not running: {', '.join(dead)} (logs in {self._p('log')})")
        for argv in (["sinfo", "-N", "-o", "%N %P %T %C"], ["squeue", "-o", "%i %j %T %M %D %R"]):
            out = self._run(argv)
            print(out.stdout.rstrip() or out.stderr.rstrip())
        return 0 if not dead else 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bin/cluster", description=__doc__.split("\n\n")[0],
                                epilog="Missing Slurm: sudo apt-get install -y slurm-wlm munge")
    p.add_argument("command", choices=("up", "down", "status", "env"))
    p.add_argument("--nodes", type=int, default=Shape.nodes, help="nodes (default: 4)")
    p.add_argument("--prefix", default=Shape.prefix, help="node name prefix (default: tsn -> tsn1..tsnN)")
    p.add_argument("--partition", default=Shape.partition, help="partition name (default: ts)")
    p.add_argument("--port", type=int, default=Shape.port, help="slurmctld port; nodes use the next ones")
    p.add_argument("--cpus", type=int, default=Shape.cpus, help="CPUs each node advertises (default: 2)")
    p.add_argument("--dir", default=os.environ.get(envnames.CLUSTER_DIR, DEFAULT_DIR), help="state folder")
    args = p.parse_args(argv)
    cluster = Cluster(args.dir)
    try:
        if args.command == "up":
            cluster.up(Shape(args.nodes, args.prefix, args.partition, args.port, args.cpus))
        elif args.command == "down":
            cluster.down()
        elif args.command == "env":
            print(f"export SLURM_CONF={cluster.conf}")
        else:
            return cluster.status()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_MISSING
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
