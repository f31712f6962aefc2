"""Interrupts end a run cleanly, whoever sends them: Ctrl-C in a terminal (SIGINT to Snakemake and
every job, its process group) or ``kill -INT <snakemake pid>`` from a supervisor (Snakemake alone).

Snakemake's own reaction to SIGINT ("Terminating processes on user request") leaves the running
jobs of its local executor behind: they go on, write their outputs after Snakemake has exited, and
the next run stops with ``IncompleteFilesException``. Here, instead:

- **Snakemake's side** (:func:`forward_interrupts`, installed by the Snakefile's ``onstart`` for
  local runs): SIGINT starts Snakemake's graceful stop (the one it has for SIGTERM: no new job,
  wait for the running ones, record each as failed or finished, remove a failed job's outputs and
  incomplete markers) and sends SIGINT to every job process, also those that start meanwhile, until
  they have ended (a job ignores it until its script's first line: :func:`job_shell_prefix`). The
  jobs end within seconds; Snakemake exits after them, and the same command resumes (no
  ``--rerun-incomplete``). A second interrupt kills the jobs at once (SIGKILL: no output is
  half-written, every write is atomic). Snakemake's error blocks for jobs it interrupted are not
  printed: each job prints its own line.
- **A job's side**: :mod:`job_start` (the first import of every rule script) makes an interrupt
  during the job's imports one console line and an exit; :func:`session_handler` (entered by
  ``harness.rule_session``) turns the first SIGINT into ``KeyboardInterrupt`` and ignores the
  ones after it (in a terminal a job gets two: the terminal's and Snakemake's), so that the job's
  cleanup is not interrupted in turn.

Standard library only (psutil, a Snakemake dependency, is imported when an interrupt comes):
the Snakefile imports this for every run, and a job imports it before torch.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time

SHELLS = {"sh", "bash", "dash", "zsh"}  # a job's shell waits for its script: the script gets the signal
POLL_S = 0.2  # how often Snakemake interrupts its jobs again after an interrupt


def _console(text: str) -> None:
    stream = sys.__stderr__ or sys.stderr
    stream.write(text)
    stream.flush()


# ------------------------------------------------------------------------------ Snakemake's side ----

# How Snakemake's CalledProcessError reads for a job that ended on SIGINT: our jobs exit with
# 128 + SIGINT when told to stop (job_start, harness), a job without a handler dies of the signal.
_ENDED_ON_SIGINT = re.compile(r"non-zero exit status 130\b|died with <Signals\.SIGINT")


class _InterruptedJobErrors(logging.Filter):
    """Drop Snakemake's error blocks ("Error in rule ...", RuleException, CalledProcessError) for
    jobs that were told to stop: each said so in its own line.

    Two ways to know. Once Snakemake's handler ran, every job error is one. Before it: in a
    terminal the job gets the same SIGINT, and its exit can be reported first (Python runs the
    handler in the main thread, which may be blocked while another thread took the signal), so a
    job that ended on SIGINT is recognised by its exit status. Snakemake reports a failed job from
    one thread, the exception and then "Error in rule", so the thread names the job's second record."""

    def __init__(self, interrupted: threading.Event):
        super().__init__()
        self.interrupted = interrupted
        self.said_will_exit = False
        self.threads_reporting_interrupted_job: set[int | None] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        event = str(getattr(record, "event", "")).lower()
        if event == "error" and _ENDED_ON_SIGINT.search(str(record.msg)):
            self.threads_reporting_interrupted_job.add(record.thread)
            return False
        if event == "job_error" and record.thread in self.threads_reporting_interrupted_job:
            self.threads_reporting_interrupted_job.discard(record.thread)
            return False
        if not self.interrupted.is_set():
            return True
        if str(record.msg).startswith("Will exit after finishing"):  # said once per finished job: once is enough
            said, self.said_will_exit = self.said_will_exit, True
            return not said
        return str(getattr(record, "event", "")).lower() not in {"job_error", "error", "group_error"}


def forward_interrupts(workflow) -> bool:
    """In the Snakemake the user started, running jobs locally: SIGINT stops the run gracefully and
    interrupts its jobs (module docstring). Returns whether the handler was installed."""
    scheduler = getattr(workflow, "scheduler", None)
    if scheduler is None or getattr(workflow, "remote_exec", False) or threading.current_thread() is not \
            threading.main_thread():
        return False  # a cluster executor cancels its own jobs; signals reach the main thread only
    interrupted = threading.Event()
    snakemake_logger = logging.getLogger("snakemake.logging")
    snakemake_logger.addFilter(_InterruptedJobErrors(interrupted))
    main_pid = os.getpid()

    def on_interrupt(signum, frame):
        if interrupted.is_set():
            threading.Thread(target=_signal_jobs, args=(main_pid, signal.SIGKILL), daemon=True).start()
            return
        interrupted.set()
        # The graceful stop takes the scheduler's lock, which this (main) thread may hold right now:
        # a thread waits for it instead of the handler.
        threading.Thread(target=_stop, args=(scheduler, main_pid), daemon=True).start()

    signal.signal(signal.SIGINT, on_interrupt)
    return True


def _job_processes(main_pid: int):
    import psutil

    try:
        children = psutil.Process(main_pid).children(recursive=True)
    except psutil.Error:
        return []
    jobs = []
    for child in children:
        try:
            if child.name() not in SHELLS:
                jobs.append(child)
        except psutil.Error:
            continue
    return jobs


def job_shell_prefix(shell_executable: str | None) -> str:
    """The prefix of every job's shell command (the Snakefile's ``shell.prefix``): Snakemake's own for
    bash (strict mode), then SIGINT ignored. A job's shell and its Python (which keeps an ignored
    SIGINT ignored) then start deaf to it until the script's first line, :mod:`job_start`, installs
    the one-line handler: an interrupt in between, while Python starts and runs Snakemake's preamble,
    is no traceback. The jobs' own interrupt comes from :func:`forward_interrupts`, which repeats it
    until the job has ended."""
    strict = "set -euo pipefail; " if os.path.basename(shell_executable or "") == "bash" else ""
    return strict + "trap '' INT; "


def _signal_jobs(main_pid: int, signum: int) -> int:
    """Send `signum` to every job process; returns how many."""
    import psutil

    sent = 0
    for process in _job_processes(main_pid):
        try:
            process.send_signal(signum)
            sent += 1
        except psutil.Error:
            continue
    return sent


def _stop(scheduler, main_pid: int) -> None:
    running = len(getattr(scheduler, "running", ()))
    _console(f"Interrupted: stopping {running} running job(s); Snakemake exits when they have ended, "
             f"and the same command resumes the run (a second Ctrl-C kills the jobs at once).\n")
    scheduler.exit_gracefully()
    while True:  # a daemon thread: it ends with Snakemake
        # again and again: a job that is still starting ignores SIGINT (job_shell_prefix) until
        # job_start listens; a job that has taken it ignores the rest while it winds down
        _signal_jobs(main_pid, signal.SIGINT)
        time.sleep(POLL_S)


# ------------------------------------------------------------------------------------ a job's side ----

def _job_identity() -> tuple[str, str]:
    """The rule and log of the job this process runs (Snakemake's object in the script's globals)."""
    job = getattr(sys.modules.get("__main__"), "snakemake", None)
    rule = getattr(job, "rule", None) or os.path.basename(sys.argv[0] or "job")
    logs = list(getattr(job, "log", None) or [])
    return str(rule), str(logs[0]) if logs else ""


def quiet_start() -> None:
    """Until the job's session begins: an interrupt is one line on the console and in the job's log,
    and an exit with status 130, not a traceback from whichever import it hit. Nothing is written yet."""
    started = time.time()

    def on_interrupt(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        rule, log = _job_identity()
        elapsed = time.time() - started
        if log:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
                with open(log, "a") as f:
                    f.write(f"interrupted (SIGINT) while starting, after {elapsed:.1f} s\n")
            except OSError:
                pass
        _console(f"{rule} interrupted while starting, after {elapsed:.1f} s" + (f" (log: {log})" if log else "") + "\n")
        os._exit(128 + signal.SIGINT)

    signal.signal(signal.SIGINT, on_interrupt)


_RECEIVED: list[float] = []  # when this job's session got its SIGINT


def session_handler(signum, frame):
    """The first SIGINT raises KeyboardInterrupt; later ones are ignored while the job winds down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _RECEIVED.append(time.time())
    raise KeyboardInterrupt


def received() -> bool:
    """Whether this job was interrupted. A library may turn the KeyboardInterrupt into another error
    (torch building a tensor from a file it was reading raised ValueError): the job is still one
    that was told to stop, not one whose input is damaged."""
    return bool(_RECEIVED)
