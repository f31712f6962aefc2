"""Run the quick benchmarks one after another (each under about two minutes at its defaults):
sampling cost, memory and storage, distillation throughput. The workflow's parallelism
(``dag_parallelism.py``, several minutes per run) is run separately.

    python benchmarks/run_all.py [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = ["sampling_cost.py", "memory_storage.py", "distill_throughput.py"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()
    failed = []
    for script in QUICK:
        cmd = [sys.executable, str(HERE / script), "--threads", str(args.threads), "--out", str(args.out)]
        if script != "memory_storage.py":  # exact counts: nothing to repeat
            cmd += ["--repeats", str(args.repeats)]
        print(f"$ {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        if subprocess.run(cmd).returncode != 0:
            failed.append(script)
        print(f"({script}: {time.perf_counter() - start:.0f} s)\n", flush=True)
    if failed:
        sys.exit(f"failed: {failed}")


if __name__ == "__main__":
    main()
