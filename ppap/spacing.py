"""Which timesteps a respaced sampler visits (pure Python: the config check uses it before any job).

* ``ddim``: guided-diffusion's ``ddimN`` (``space_timesteps(T, "ddimN")``): the first integer
  stride s with exactly N values in range(0, T, s); T = 1000, N = 25 gives 0, 40, ..., 960.
  The paper's DDIM-25, and the default.
* ``leading``: diffusers' "leading" spacing with steps_offset 0: i * (T // N) for i < N (equal to
  ``ddim`` whenever N divides T).
* ``trailing``: diffusers' "trailing" spacing, from T - 1 down in strides of T / N (Lin et al., 2024).
"""

from __future__ import annotations

import math

from ppap.vocab import SPACINGS


def spaced_timesteps(num_train_timesteps: int, num_steps: int, spacing: str = "ddim") -> list[int]:
    """The decreasing timesteps of a `num_steps` sampler over a `num_train_timesteps` schedule."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
    if spacing == "ddim":
        for stride in range(1, num_train_timesteps):
            if len(range(0, num_train_timesteps, stride)) == num_steps:
                return list(range(0, num_train_timesteps, stride))[::-1]
        raise ValueError(f"guided-diffusion's ddim{num_steps} spacing does not exist for T = {num_train_timesteps} "
                         "(no integer stride gives exactly that many steps); use leading or trailing")
    if spacing == "leading":
        return [i * (num_train_timesteps // num_steps) for i in range(num_steps)][::-1]
    if spacing == "trailing":
        # diffusers' formula, cut to N: the float arange sometimes yields an (N+1)-th value at
        # about 0, i.e. timestep -1 (T = 1000, N = 61 for instance; diffusers keeps it).
        # numpy's arange(T, 0, -T / N), value by value: it fills T + i * delta with delta taken
        # as (T + step) - T, which can differ from the step in the last bit.
        step = -num_train_timesteps / num_steps
        delta = (num_train_timesteps + step) - num_train_timesteps
        count = math.ceil(-num_train_timesteps / step)
        return [int(round(num_train_timesteps + i * delta)) - 1 for i in range(count)][:num_steps]
    raise ValueError(f"unknown timestep spacing {spacing!r} (use one of {', '.join(SPACINGS)})")
