"""Ctrl-C (SIGINT to the process group, as a terminal sends) and SIGTERM to a running bin/sweep
on the simulate backend (Ctrl-C also under submitit's LocalExecutor): every rank stops within
10 s, no process is left, the experiment is CANCELLED, one line says what finished and how to
resume, exit 130 / 143; the same command then runs it again as attempt 2, whose records in the
rank files are a complete run."""

import json
import os
import signal
import subprocess
import time

import pytest

from contract import rundir
from tests.helpers import ROOT

pytestmark = pytest.mark.integration

STEPS = 120
ARGS = ["--sweep", "intr", "--strategies", "ddp", "--nodes", "2", "--steps", str(STEPS),
        "--global-batch", "16", "--warmup", "0"]
EXP = f"ddp-n2-p1-b16-s{STEPS}-w0-r0"


def no_slurm(tmp_path) -> dict:
    """An environment where Slurm does not answer (a `squeue` that fails at once comes first on
    PATH), even where a loopback cluster runs: submitit takes its LocalExecutor."""
    fake = tmp_path / "no-slurm"
    fake.mkdir(exist_ok=True)
    (fake / "squeue").write_text("#!/bin/sh\nexit 1\n")
    (fake / "squeue").chmod(0o755)
    return {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ.get('PATH', '')}"}


def start(logs, backend: str) -> subprocess.Popen:
    return subprocess.Popen([os.path.join(ROOT, "bin", "sweep"), "--logs", str(logs), "--backend", backend, *ARGS],
                            cwd=ROOT, env=no_slurm(logs),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_first_step(proc: subprocess.Popen, run_dir, timeout_s: float = 180) -> None:
    end = time.time() + timeout_s
    while time.time() < end:
        assert proc.poll() is None, "bin/sweep ended before the first step"
        if all(os.path.exists(run_dir / f"rank-{r}.jsonl") and '"step"' in (run_dir / f"rank-{r}.jsonl").read_text()
               for r in range(2)):
            return
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("no step record within the time allowed")


def processes_naming(text: str) -> list[int]:
    """Pids of live processes whose command line mentions `text` (the sweep's logs folder)."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if text in cmd and not zombie:
            found.append(int(pid))
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def interrupt(tmp_path, signum: int, backend: str = "simulate") -> tuple[subprocess.Popen, str, str, float]:
    run_dir = tmp_path / "intr" / EXP
    proc = start(tmp_path, backend)
    wait_for_first_step(proc, run_dir)
    t0 = time.time()
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    else:
        proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc, out, err, time.time() - t0


def check_interrupted(tmp_path, proc, out, err, took, signum) -> None:
    assert proc.returncode == 128 + signum, out + err
    assert took < 10, took
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    name = signal.Signals(signum).name
    assert lines[0].startswith(f"sweep intr interrupted by {name}: 0/1 completed, {EXP} cancelled (attempt 1); "
                               f"resume with: bin/sweep --logs {tmp_path}"), lines[0]
    status = rundir.read_status(str(tmp_path / "intr" / EXP))
    assert status["state"] == "CANCELLED" and status["attempts"] == 1, status
    assert not group_alive(proc.pid)
    assert processes_naming(str(tmp_path)) == []


@pytest.mark.parametrize("backend", ["simulate", "submitit"])
def test_ctrl_c_cancels_and_the_same_command_resumes_as_attempt_2(tmp_path, backend):
    if backend == "submitit":
        pytest.importorskip("submitit")
    proc, out, err, took = interrupt(tmp_path, signal.SIGINT, backend)
    check_interrupted(tmp_path, proc, out, err, took, signal.SIGINT)

    again = subprocess.run([os.path.join(ROOT, "bin", "sweep"), "--logs", str(tmp_path), "--backend", backend, *ARGS],
                           cwd=ROOT, env=no_slurm(tmp_path), capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    run_dir = tmp_path / "intr" / EXP
    status = rundir.read_status(str(run_dir))
    assert status["state"] == "COMPLETED" and status["attempts"] == 2, status
    for rank in range(2):
        # The raw file (every attempt), not the analysis' reading of it (the last attempt only).
        recs = [json.loads(line) for line in (run_dir / f"rank-{rank}.jsonl").read_text().splitlines()]
        assert {r["attempt"] for r in recs} == {1, 2}, rank
        first = [r for r in recs if r["attempt"] == 1]
        assert first[0]["event"] == "start" and first[0]["attempt"] == 1
        assert not any(r["event"] == "end" and r["status"] == "COMPLETED" for r in first)
        last = [r for r in recs if r["attempt"] == 2]
        events = [r["event"] for r in last]
        assert events[0] == "start" and last[0]["attempt"] == 2 and events[-1] == "end", events
        assert last[-1]["status"] == "COMPLETED"
        assert [r["step"] for r in last if r["event"] == "step"] == list(range(STEPS))
        assert recs[:len(first)] == first  # attempt 1's records stay, before attempt 2's


def test_sigterm_cancels_with_143(tmp_path):
    proc, out, err, took = interrupt(tmp_path, signal.SIGTERM)
    check_interrupted(tmp_path, proc, out, err, took, signal.SIGTERM)
