"""Rule noise_schedule: the embedded preset's training schedule as a diffusers scheduler config.

Its own rule so that the labeled baselines (which need the schedule, not the model) do not wait
for the diffusion model to finish training.
"""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

from harness import rule_session
from ppap import schedules
from ppap.models.unet import save_scheduler

with rule_session(snakemake.log[0], snakemake.threads, "noise_schedule") as log:
    cfg = snakemake.params.diffusion
    scheduler = schedules.make_ddpm_scheduler(cfg["num_train_timesteps"], cfg["beta_schedule"])
    log.info("%s", dict(scheduler.config))
    save_scheduler(snakemake.output[0], scheduler)
