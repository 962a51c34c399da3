"""A backend of the project's own: accelgate calls `channels_last(pipe, **options)` with the
options of `[tool.accelgate.backend.my-channels-last]` and compares the pipeline it returns
with the eager baselines. Channels-last changes only the memory layout, so its images must stay
within a level of eager's: the gate's strict default tolerances apply."""
import torch


def channels_last(pipe, vae: bool = True):
    pipe.unet.to(memory_format=torch.channels_last)
    if vae:
        pipe.vae.to(memory_format=torch.channels_last)
    return pipe
