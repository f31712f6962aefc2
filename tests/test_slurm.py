"""The smoke preset's Table 1 through a real (one-node) SLURM cluster with Snakemake's SLURM executor.

Opt-in: ``PPAP_TEST_SLURM=1`` (``.ci/run`` installs ``slurm-wlm`` and ``munge`` and sets it). With
the variable set, a machine that cannot start the cluster fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, run_workflow
from slurm_cluster import PARTITION, diagnostics, local_slurm, missing_tools

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("PPAP_TEST_SLURM") != "1",
                       reason="opt-in: PPAP_TEST_SLURM=1 starts a one-node SLURM (root, slurm-wlm, munge)"),
]
DESCRIPTIVE = ["method", "n_experts", "adapter_rank", "supervision", "trainable_params", "stored_params", "samples", "seeds",
               "samples_per_seed"]


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    missing = missing_tools()
    if missing:
        pytest.fail(f"PPAP_TEST_SLURM=1 but this machine lacks {missing} (apt-get install slurm-wlm munge, as root)")
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install snakemake-executor-plugin-slurm")
    root = tmp_path_factory.mktemp("slurm")
    with local_slurm(root) as env:
        yield env, root


def test_smoke_table1_runs_through_slurm_jobs(slurm_env, smoke_run, tmp_path):
    env, cluster = slurm_env
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = run_workflow(workdir, "results/table1.csv", "--executor", "slurm",
                          "--profile", str(REPO / "workflow" / "profiles" / "slurm"),
                          "--configfile", str(REPO / "config" / "smoke.yaml"),
                          "--default-resources", f"slurm_partition={PARTITION}",
                          "--slurm-init-seconds-before-status-checks", "3", "--latency-wait", "10",
                          timeout=1500, env={"SLURM_CONF": env["SLURM_CONF"]})
    logs = sorted((workdir / "logs").rglob("*.log"))
    if result.returncode != 0:
        tails = "\n".join(f"== {p}\n{p.read_text()[-1500:]}" for p in logs)
        pytest.fail(f"SLURM run failed:\n{result.stderr[-5000:]}\n{tails}\n{diagnostics(cluster)}")

    # every job ran inside a SLURM job of this cluster: its own log names it, sbatch's log exists,
    # and the controller knows it (MinJobAge keeps finished jobs in squeue)
    job_ids = {}
    for log in logs:
        found = re.findall(r"SLURM job (\d+) on ", log.read_text())
        assert len(found) == 1, f"{log} does not name its SLURM job:\n{log.read_text()[:1000]}"
        job_ids[log.relative_to(workdir / "logs").as_posix()] = found[0]
    local_logs = {p.relative_to(smoke_run / "logs").as_posix() for p in (smoke_run / "logs").rglob("*.log")}
    assert set(job_ids) == local_logs, "the SLURM run must run the same jobs as the local one"
    assert len(set(job_ids.values())) == len(job_ids), "one SLURM job per workflow job"
    slurm_logs = {p.stem for p in (workdir / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert set(job_ids.values()) <= slurm_logs, sorted(set(job_ids.values()) - slurm_logs)
    known = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], env=env, capture_output=True, text=True,
                           check=True).stdout.split("\n")
    states = dict(line.split() for line in known if line.strip())
    assert all(states.get(i) == "COMPLETED" for i in job_ids.values()), states

    # the same table as the local run: methods, columns, descriptive columns; metrics all present
    local = pd.read_csv(smoke_run / "results" / "table1.csv", dtype={"adapter_rank": str})
    remote = pd.read_csv(workdir / "results" / "table1.csv", dtype={"adapter_rank": str})
    assert list(remote.columns) == list(local.columns)
    pd.testing.assert_frame_equal(remote[DESCRIPTIVE], local[DESCRIPTIVE])
    metrics = [c for c in local.columns if c not in DESCRIPTIVE]
    assert (np.isnan(remote[metrics].to_numpy(float)) == np.isnan(local[metrics].to_numpy(float))).all()
