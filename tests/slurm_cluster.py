"""A one-node SLURM cluster on this machine, for the test that runs the workflow through SLURM.

Needs root and Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them). The controller
and the node daemon run in the foreground as child processes with their state and logs in a
temporary directory. The configuration is written to ``/etc/slurm/slurm.conf`` (and removed after):
Snakemake's job-step executor strips ``SLURM_*`` variables, ``SLURM_CONF`` included, before its
``srun``, so a job only finds the cluster where a real cluster keeps its configuration. An
``/etc/slurm/slurm.conf`` that this module did not write is never touched (the test fails instead). There is no slurmdbd, so
no ``sacct``: job status comes from ``squeue``, which keeps finished jobs for ``MinJobAge``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "srun")
PARTITION = "ci"
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# written by ppap-bench tests/slurm_cluster.py"


def missing_tools() -> list[str]:
    """What this machine lacks to start the cluster (empty when it can)."""
    missing = [tool for tool in (*DAEMONS, *CLIENTS) if shutil.which(tool) is None
               and not Path("/usr/sbin", tool).exists()]
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def _sbin(tool: str) -> str:
    return shutil.which(tool) or str(Path("/usr/sbin", tool))


def _munge_works() -> bool:
    try:
        token = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=True).stdout
        subprocess.run(["unmunge"], input=token, capture_output=True, timeout=10, check=True)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def _start_munge() -> None:
    """munged runs as the munge user; its key comes with the Debian package (made if absent)."""
    if _munge_works():
        return
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["mungekey", "--create"], check=True)
    for directory in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
        Path(directory).mkdir(parents=True, exist_ok=True)
        shutil.chown(directory, "munge", "munge")
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    subprocess.run(["runuser", "-u", "munge", "--", _sbin("munged")], check=True)
    deadline = time.time() + 20
    while not _munge_works():
        if time.time() > deadline:
            raise RuntimeError("munged did not start (see /var/log/munge/munged.log)")
        time.sleep(0.5)


def _node_line() -> str:
    """This machine as slurmd sees it (name, CPUs, memory), so the node registers without drain."""
    out = subprocess.run([_sbin("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("NodeName="))
    return line + " State=UNKNOWN"


def write_config(root: Path, conf: Path = SYSTEM_CONF) -> Path:
    if conf.exists() and MARKER not in conf.read_text():
        raise RuntimeError(f"{conf} exists and is not ours: this machine has its own SLURM; not touching it")
    for name in ("state", "spool"):
        (root / name).mkdir(parents=True, exist_ok=True)
    node = _node_line()
    host = node.split()[0].split("=", 1)[1]
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(f"""\
{MARKER}
ClusterName=ppapci
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'slurmctld.log'}
SlurmdLogFile={root / 'slurmd.log'}
{node}
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    return conf


@contextlib.contextmanager
def local_slurm(root: Path, timeout: float = 60) -> Iterator[dict[str, str]]:
    """Start munge, slurmctld and slurmd; yield the environment clients need; stop the daemons."""
    _start_munge()
    conf = write_config(root)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons = []
    try:
        for daemon in ("slurmctld", "slurmd"):
            log = open(root / f"{daemon}.out", "w")
            daemons.append(subprocess.Popen([_sbin(daemon), "-D", "-f", str(conf)], env=env, stdout=log,
                                            stderr=subprocess.STDOUT))
        deadline = time.time() + timeout
        while True:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
            if state.strip() in ("idle", "mixed", "allocated"):
                break
            for process in daemons:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited ({process.returncode}):\n{diagnostics(root)}")
            if time.time() > deadline:
                raise RuntimeError(f"the SLURM node is not up after {timeout} s (state {state.strip()!r}):\n"
                                   f"{diagnostics(root)}")
            time.sleep(1)
        yield env
    finally:
        for process in daemons:
            process.terminate()
        for process in daemons:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        if conf.exists() and MARKER in conf.read_text():
            conf.unlink()


def diagnostics(root: Path) -> str:
    return "\n".join(f"== {path.name}\n{path.read_text()[-3000:]}" for path in sorted(root.glob("*.log"))
                     if path.exists())
