"""The smoke preset's Table 1 through a real (one-node) SLURM cluster with Snakemake's SLURM executor.

Two of its rows (unguided and the noise-aware guide) keep the test short while every kind of job
runs as a SLURM job: data, schedule, the three trainings, a distillation and its manifest, sampling,
scoring and the table.

Opt-in: ``PPAP_TEST_SLURM=1`` (``.ci/run`` installs ``slurm-wlm`` and ``munge`` and sets it). With
the variable set, a machine that cannot start the cluster fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
from slurm_cluster import PARTITION, diagnostics, local_slurm, missing_tools

from conftest import REPO, run_workflow

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("slurm"),  # one cluster (module fixture) on one worker
    pytest.mark.skipif(os.environ.get("PPAP_TEST_SLURM") != "1",
                       reason="opt-in: PPAP_TEST_SLURM=1 starts a one-node SLURM (root, slurm-wlm, munge)"),
]
ROWS = ("unguided", "noise_aware_single")
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
    smoke = ("--configfile", str(REPO / "config" / "smoke.yaml"), "--config", f"table1={list(ROWS)}")
    (tmp_path / "plan").mkdir()
    plan = run_workflow(tmp_path / "plan", "results/table1.csv", "-n", "--cores", "1", *smoke)
    assert plan.returncode == 0, plan.stderr[-3000:]
    planned_logs = set(re.findall(r"^\s+log: (logs/\S+)$", plan.stdout, flags=re.M))
    # prepare_data, distill + manifest, 2 x (sample, evaluate), table1 (the networks are shipped)
    assert len(planned_logs) == 8, sorted(planned_logs)
    result = run_workflow(workdir, "results/table1.csv", "--executor", "slurm",
                          "--profile", str(REPO / "workflow" / "profiles" / "slurm"), *smoke,
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
    assert set(job_ids) == {log.removeprefix("logs/") for log in planned_logs}, "SLURM must run the planned jobs"
    assert len(set(job_ids.values())) == len(job_ids), "one SLURM job per workflow job"
    slurm_logs = {p.stem for p in (workdir / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert set(job_ids.values()) <= slurm_logs, sorted(set(job_ids.values()) - slurm_logs)
    known = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], env=env, capture_output=True, text=True,
                           check=True).stdout.split("\n")
    states = dict(line.split() for line in known if line.strip())
    assert all(states.get(i) == "COMPLETED" for i in job_ids.values()), states

    # the same table as the local run: methods, columns, descriptive columns; metrics all present
    local = pd.read_csv(smoke_run / "results" / "table1.csv", dtype={"adapter_rank": str})
    local = local[local["method"].isin(ROWS)].reset_index(drop=True)
    remote = pd.read_csv(workdir / "results" / "table1.csv", dtype={"adapter_rank": str})
    assert list(remote["method"]) == list(ROWS)
    assert list(remote.columns) == list(local.columns)
    pd.testing.assert_frame_equal(remote[DESCRIPTIVE], local[DESCRIPTIVE])
    metrics = [c for c in local.columns if c not in DESCRIPTIVE and c != "machine"]  # machine: the CPU's name
    assert (remote["machine"].notna()).all()
    assert (np.isnan(remote[metrics].to_numpy(float)) == np.isnan(local[metrics].to_numpy(float))).all()
