"""ppap-bench: plug-and-play guidance of diffusion models with timestep-routed LoRA experts."""

__version__ = "0.1.0"
