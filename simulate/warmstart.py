"""Warm start for the simulate backend: a server that has imported torch, torch._dynamo and every
trainer once forks each rank of each experiment, instead of every rank importing them afresh.

    python -m simulate.warmstart FD    # the server (started by `WarmServer`; FD: its control socket)

The launcher (`simulate/launcher.py`) starts one server per launcher process (`server()`), on a
SOCK_SEQPACKET socket pair. The server imports `PRELOAD` and every `trainers.<strategy>` and
starts no thread (no torch compute, no process group, no CUDA): it says how many threads it has
once ready, and the launcher uses it only if that is 1. Per rank the launcher sends the rank's
command line, environment and cores, with the write end of the pipe its output goes to
(SCM_RIGHTS). The server forks twice: the middle process exits at once, so the rank is
re-parented to the launcher, which made itself a child subreaper (PR_SET_CHILD_SUBREAPER): the
launcher waits for it, reads its exit status and kills its process group as it does a
subprocess.Popen's. The rank, before its pid reaches the launcher, starts its own session,
takes its cores and its output pipe (as Popen with start_new_session and the launcher's
preexec_fn do); then, still one thread and given more than one core, it makes the memory it
shares with the server its own (`own_memory`); it takes its environment, applies what torch
read from the environment at import (OMP_NUM_THREADS: torch.set_num_threads), gets fresh
unseeded RNGs and torch's import-time RNG state, and runs `trainers.<strategy>` as __main__, as
`python -m` would.

What a forked rank cannot get from its environment is what the interpreter and its libraries read
at start: the server is keyed by the launcher's environment (`env_key`, without the variables
set per rank); an experiment whose environment differs gets a new server. Torch-free on the
launcher's side: the server imports torch in its own process.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback

from contract import envnames
from contract.paths import ROOT

# What a rank imports before its first step, beyond its trainer file: torch._dynamo comes with the
# first torch.optim step and DDP's constructor (bench/startup.py measures it at 0.8-1.0 s a rank).
PRELOAD = ("torch", "torch._dynamo", "torch.distributed", "torch.nn.parallel", "torch.optim")
# Set by the launcher per rank (simulate/launcher.py `_spawn`): not part of the server's key.
PER_RANK = frozenset({"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                      "OMP_NUM_THREADS", "PYTHONUNBUFFERED", "CUDA_VISIBLE_DEVICES", envnames.NODE,
                      envnames.ATTEMPT, envnames.EMULATE_LINK, envnames.THREADS, envnames.RANKS_PER_GPU,
                      envnames.CPU_OVERSUBSCRIBED, envnames.WARM, envnames.WARM_RANK})
PR_SET_CHILD_SUBREAPER = 36
MADV_POPULATE_WRITE = 23  # Linux 5.14
# The line a rank that ran own_memory prints (the bench and the tests read it): pages, seconds,
# what failed ("" or "; <why>").
OWNED_RE = re.compile(r"warm start: (\d+) pages shared with the server \(\d+ MiB\) made this rank's own in "
                      r"([\d.]+) s(.*)")
MAX_MESSAGE = 1 << 20
READY_TIMEOUT_S = 300.0


class WarmStartError(RuntimeError):
    """The server could not start a rank (or could not start)."""


def enabled(env: dict[str, str] | None = None) -> bool:
    """Warm start unless TS_WARM=0 (the Makefile's WARM=0; bin/sweep --cold sets it)."""
    return (os.environ if env is None else env).get(envnames.WARM, "1") != "0"


def env_key(env: dict[str, str]) -> tuple:
    """What a server's imports may have read: the environment less what the launcher sets per rank."""
    return tuple(sorted((k, v) for k, v in env.items() if k not in PER_RANK))


def _make_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise WarmStartError(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


# ---- the launcher's side ------------------------------------------------------------------------

class WarmProcess:
    """A forked rank, for the launcher as a subprocess.Popen is: pid, stdout, poll, wait, returncode."""

    def __init__(self, pid: int, stdout: io.TextIOWrapper) -> None:
        self.pid, self.stdout, self.returncode = pid, stdout, None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its status is lost
                self.returncode = 255
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            try:
                self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            except ChildProcessError:
                self.returncode = 255
        return self.returncode


class WarmServer:
    """One server process and its control socket; `start_rank` forks a rank of it."""

    def __init__(self, key: tuple, env: dict[str, str]) -> None:
        self.key = key
        _make_subreaper()
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen([sys.executable, "-m", "simulate.warmstart", str(theirs.fileno())], cwd=ROOT,
                                     env=env, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)  # a terminal's Ctrl-C reaches only the launcher
        theirs.close()
        self.ready: dict | None = None

    def wait_ready(self) -> dict:
        """The server's ready message (imports done, its thread count); raises if it failed."""
        if self.ready is None:
            self._sock.settimeout(READY_TIMEOUT_S)
            self.ready = self._receive()
            self._sock.settimeout(None)
            if self.ready.get("threads") != 1:
                raise WarmStartError(f"the warm-start server runs {self.ready.get('threads')} threads after its "
                                     "imports; a fork would inherit them broken")
        return self.ready

    def _receive(self) -> dict:
        try:
            data = self._sock.recv(MAX_MESSAGE)
        except OSError as e:
            raise WarmStartError(f"warm-start server: {e}") from None
        if not data:
            raise WarmStartError(f"the warm-start server ended (exit {self.proc.poll()})")
        msg = json.loads(data)
        if "error" in msg:
            raise WarmStartError(msg["error"])
        return msg

    def start_rank(self, strategy: str, argv: list[str], env: dict[str, str], cores: list[int]) -> WarmProcess:
        """Fork one rank; it is this process's child once this returns, in its own session."""
        self.wait_ready()
        r, w = os.pipe()
        try:
            request = json.dumps({"strategy": strategy, "argv": argv, "env": env, "cores": cores, "cwd": ROOT})
            try:
                socket.send_fds(self._sock, [request.encode()], [w])
            except OSError as e:
                raise WarmStartError(f"warm-start server: {e}") from None
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        try:
            pid = int(self._receive()["pid"])
        except BaseException:
            os.close(r)
            raise
        return WarmProcess(pid, io.TextIOWrapper(io.FileIO(r, "r"), errors="replace"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """Stop the server (its ranks are the launcher's, in their own sessions: untouched)."""
        self._sock.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_server: WarmServer | None = None


def server(env: dict[str, str]) -> WarmServer:
    """This process's server for `env` (a rank's environment less its per-rank part): the running one
    where its key matches, else a new one (the old one shut down)."""
    global _server
    key = env_key(env)
    if _server is not None and (_server.key != key or not _server.alive()):
        shutdown()
    if _server is None:
        # OpenMP sizes its pool when torch loads: with more than one thread, `import torch` starts it
        # (one thread per extra core) in the server, and a forked rank would inherit it broken.
        # Each rank sets its own count (`_run_trainer`); the pool starts there, at its first use.
        _server = WarmServer(key, {**{k: v for k, v in env.items() if k not in PER_RANK}, "OMP_NUM_THREADS": "1"})
    return _server


def shutdown() -> None:
    """Stop this process's server, if any (the end of a sweep, Ctrl-C, exit)."""
    global _server
    if _server is not None:
        s, _server = _server, None
        s.close()


atexit.register(shutdown)


# ---- the server ----------------------------------------------------------------------------------

def _preload() -> dict:
    t0 = time.time()
    import torch

    rng = torch.random.get_rng_state()  # a fresh interpreter's, before any import could draw from it
    for name in PRELOAD:
        importlib.import_module(name)
    from contract.config import STRATEGIES

    for s in STRATEGIES:
        importlib.import_module(f"trainers.{s}")
    global _RNG_AT_IMPORT
    _RNG_AT_IMPORT = rng
    cuda = any(os.path.basename(line.split()[-1]).startswith("libcuda.so") for line in open("/proc/self/maps"))
    return {"threads": len(os.listdir("/proc/self/task")), "import_s": time.time() - t0,
            "modules": len(sys.modules), "cuda_driver_loaded": cuda}


_RNG_AT_IMPORT = None


def serve(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    try:
        ready = _preload()
    except BaseException as e:  # noqa: BLE001 - say why to the launcher, which falls back to cold
        sock.send(json.dumps({"error": f"warm-start server imports failed: {type(e).__name__}: {e}"}).encode())
        return
    sock.send(json.dumps(ready).encode())
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 1)
        except (ConnectionError, OSError):
            return
        if not data:
            for f in fds:
                os.close(f)
            return  # the launcher closed its end (or ended)
        try:
            reply = {"pid": _fork_rank(json.loads(data), fds[0], sock)}
        except Exception as e:  # noqa: BLE001 - one rank's failure to start is the launcher's to report
            reply = {"error": f"warm start of a rank failed: {type(e).__name__}: {e}"}
        finally:
            for f in fds:
                os.close(f)
        sock.send(json.dumps(reply).encode())


def _fork_rank(req: dict, out_fd: int, sock: socket.socket) -> int:
    """Fork twice; the grandchild writes its pid once it is in its own session with its output set."""
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(r)
            if os.fork() == 0:
                _rank(req, out_fd, w, sock)  # never returns
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 64):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(middle, 0)
    if not chunks:
        raise WarmStartError("the forked rank ended before it started")
    return int(b"".join(chunks))


def _rank(req: dict, out_fd: int, pid_w: int, sock: socket.socket) -> None:
    code = 1
    try:
        os.setsid()
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(out_fd)
        sock.close()
        os.sched_setaffinity(0, req["cores"])
        os.write(pid_w, str(os.getpid()).encode())
        os.close(pid_w)
        code = _run_trainer(req)
    except BaseException:  # noqa: BLE001 - the rank's own errors are its main's; this is the start's
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# /proc/self/pagemap, the top byte of an entry: bit 7 (63) the page is present, bit 0 (56) it is
# mapped by this process only. 1 where present and shared (with the server, after the fork).
_SHARED = bytes(int(b & 0x80 != 0 and b & 0x01 == 0) for b in range(256))


def shared_runs() -> list[tuple[int, int]]:
    """(address, pages) of each run of present pages this process shares with another (after a
    fork: its parent) in its private writable mappings."""
    page, runs = os.sysconf("SC_PAGE_SIZE"), []
    with open("/proc/self/maps") as f:
        maps = [line.split() for line in f]
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        for fields in maps:
            if fields[1][:2] != "rw" or fields[1][3] != "p":
                continue
            start, end = (int(a, 16) for a in fields[0].split("-"))
            try:
                entries = os.pread(fd, 8 * ((end - start) // page), 8 * (start // page))
            except OSError:
                continue
            runs += [(start + m.start() * page, m.end() - m.start())
                     for m in re.finditer(b"\x01+", entries[7::8].translate(_SHARED))]
    finally:
        os.close(fd)
    return runs


def own_memory() -> tuple[int, float, str]:
    """Copy now every page of `shared_runs`, as this process's first write to each would: (pages,
    seconds, what failed). Call while the process is one thread.

    After the fork a rank shares the server's memory (350 MB here) copy on write. Its first write
    to a shared page (a reference count, CPython's specialized bytecode, a free heap chunk) copies
    the page, and once the rank runs a second thread (OpenMP's pool, gloo's) the copy must also
    flush the page from the TLB of the other core: an inter-processor interrupt, a VM exit in a
    virtual machine. A `single` rank writes about 3000 of the 88000 pages, most in its first
    steps: step 0 took 14 ms instead of a cold rank's 7 ms, steps 1-7 8% longer, later steps 2%
    (docs/benchmarks.md#startup). Copying them all here, before any thread, one
    madvise(MADV_POPULATE_WRITE) per run of pages, costs about 0.2 s and leaves the rank owning
    its memory as a cold one does. A rank pinned to one core skips it (`_run_trainer`): its
    threads share that core, so a copy flushes no other core's TLB, and its steps matched a cold
    rank's without it."""
    t0 = time.perf_counter()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    page, pages, failed = os.sysconf("SC_PAGE_SIZE"), 0, ""
    for addr, n in shared_runs():
        if libc.madvise(addr, n * page, MADV_POPULATE_WRITE) == 0:
            pages += n
        else:  # EINVAL for every run where the kernel has no MADV_POPULATE_WRITE (before 5.14)
            failed = f"madvise(MADV_POPULATE_WRITE): {os.strerror(ctypes.get_errno())}"
    return pages, time.perf_counter() - t0, failed


def _run_trainer(req: dict) -> int:
    """Become the rank `python -m trainers.<strategy> ARGV` with the request's environment would be."""
    import random
    import runpy

    import torch

    enc = sys.stdout.encoding
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding=enc,
                                                   write_through=True)  # PYTHONUNBUFFERED
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding=enc,
                                                   errors="backslashreplace", write_through=True)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    if len(req["cores"]) > 1:  # while this is one thread; on one core a fault interrupts no other
        pages, seconds, failed = own_memory()
        print(f"warm start: {pages} pages shared with the server ({pages * os.sysconf('SC_PAGE_SIZE') >> 20} MiB) "
              f"made this rank's own in {seconds:.2f} s" + (f"; {failed}" if failed else ""))
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    os.environ[envnames.WARM_RANK] = "1"
    threads = req["env"].get("OMP_NUM_THREADS", "")  # read by OpenMP when torch loaded, in the server
    torch.set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0 else len(req["cores"]))
    random.seed()  # a fresh interpreter's unseeded RNGs differ per process
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    torch.random.set_rng_state(_RNG_AT_IMPORT)
    module = f"trainers.{req['strategy']}"
    sys.modules.pop(module, None)  # run once, as __main__, as `python -m` does
    sys.argv = [module, *req["argv"]]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # exit as an interrupted interpreter does
    except BaseException:  # noqa: BLE001 - as the interpreter would: the traceback, exit 1
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    serve(int(sys.argv[1]))
