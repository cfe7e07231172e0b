"""Load a checkpoint written by stage train back into its model: for evaluate, predict and the served model."""

from pathlib import Path

import torch

from pipeline.errors import PipelineError
from pipeline.models import build_model
from pipeline.params import Architecture, ModelRead


def load_checkpoint(path, device):
    if not Path(path).is_file():
        raise PipelineError(f"model checkpoint {path} not found (run stage train first)")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated, overwritten or not a checkpoint: any failure to read it
        path = Path(path)
        stage = f"train@{path.parent.name}-{path.stem.removeprefix('seed')}"
        raise PipelineError(
            f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120]}); restore it with "
            f"`dvc checkout {path}` or retrain with `dvc repro --force {stage}`"
        ) from None
    model = build_model(Architecture(**checkpoint["variant_params"]), ModelRead(**checkpoint["model_params"]))
    model.load_state_dict(checkpoint["state_dict"])
    return checkpoint, model.to(device, memory_format=torch.channels_last).eval()
