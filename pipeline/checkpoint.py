"""The checkpoint stage train writes, as one schema with one writer and one loader.

A checkpoint file (seed<k>.pt, a DVC output) holds what rebuilds the model and
what its evaluation reads: the variant's architecture and model settings, the
best state_dict, the normalisation of the training images, the class names and
the run's history. evaluate, predict, the served model (serving.py) and
register all read it through `load_checkpoint`; `Checkpoint.probabilities` is
the one place raw images become class probabilities outside training.
"""

import pickle
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from pipeline.data import to_model_input
from pipeline.errors import PipelineError, first_line, way_back
from pipeline.io import save_torch
from pipeline.models import build_model
from pipeline.params import Architecture, ModelRead


@dataclass(frozen=True)
class Checkpoint:
    """One seed's trained model. Stored as a plain dict of these keys (torch.load(weights_only=True) reads
    nothing else), in this order, so that a checkpoint's bytes depend on its content only."""

    variant: str
    seed: int
    variant_params: Architecture  # what build_model builds
    model_params: ModelRead  # the model.* keys the variant reads
    state_dict: dict  # the best val-loss epoch's weights
    normalisation: tuple[float, float]  # mean and std of the training images, in [0, 1] units
    best_epoch: int
    epochs_run: int
    parameters: int
    classes: list[str]
    history: list[dict]  # one record per epoch: losses, accuracies, lr

    def to_file_dict(self):
        stored = {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict: it would copy the tensors
        stored.update(
            variant_params=self.variant_params.model_dump(),
            model_params=self.model_params.model_dump(),
            normalisation=list(self.normalisation),
        )
        return stored

    def build(self, device):
        """The trained model, in eval mode, on `device`."""
        model = build_model(self.variant_params, self.model_params)
        model.load_state_dict(self.state_dict)
        return model.to(device, memory_format=torch.channels_last).eval()

    @torch.no_grad()
    def probabilities(self, model, images, device):
        """Class probabilities [N, classes] of uint8 images [N, 28, 28]: padded and normalised as in training."""
        return torch.softmax(model(to_model_input(images, *self.normalisation, device)), 1).cpu()


def save_checkpoint(path, checkpoint):
    save_torch(path, checkpoint.to_file_dict())


def weights_only_reason(error):
    """The reason in torch.load's refusal (torch 2.6-2.10 wrap it in paragraphs of advice), or its first line."""
    paragraphs = [" ".join(p.split()) for p in str(error).split("\n\n")[1:]]
    kept = [p.rpartition("WeightsUnpickler error:")[2].strip() for p in paragraphs if not p.startswith("Check the ")]
    return " ".join(p for p in kept if p) or first_line(error, 120)


def load_checkpoint(path, device):
    """(Checkpoint, its model on `device`) of a file stage train wrote; one line naming the way back otherwise."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"model checkpoint {path} not found (run stage train first)")

    def advice():
        """'; <the way back>' from dvc.lock, the workspace and the cache ('' for a file no stage wrote): asked only
        on a failure, since it opens DVC's repository and hashes the file (a shrunk evaluate's two checkpoints:
        0.3 s of CPU, quiet, AMD EPYC, 2026-12-06)."""
        found = way_back(path)
        return f"; {found}" if found else ""

    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol it then refuses anyway
            warnings.simplefilter("ignore", UserWarning)
            stored = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = weights_only_reason(e)
        if "GLOBAL" in reason:  # weights_only refused a Python object: never run code from a file
            raise PipelineError(
                f"{path} is not a checkpoint this pipeline wrote: it holds a Python object, not only tensors and "
                f"numbers ({reason[:100]}), and is not loaded{advice()}"
            ) from None
        raise PipelineError(f"{path} cannot be read (UnpicklingError: {reason[:120]}){advice()}") from None
    except Exception as e:  # truncated, overwritten or not a checkpoint: any failure to read it
        raise PipelineError(
            f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120]}){advice()}"
        ) from None
    expected = [f.name for f in fields(Checkpoint)]
    if not isinstance(stored, dict) or sorted(stored) != sorted(expected):
        keys = sorted(stored) if isinstance(stored, dict) else type(stored).__name__
        raise PipelineError(f"{path} is not a checkpoint of this version (keys {keys}, expected {expected}){advice()}")
    checkpoint = Checkpoint(
        **{
            **stored,
            "variant_params": Architecture(**stored["variant_params"]),
            "model_params": ModelRead(**stored["model_params"]),
            "normalisation": tuple(stored["normalisation"]),
        }
    )
    return checkpoint, checkpoint.build(device)
