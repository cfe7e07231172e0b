"""The model MLflow keeps and serves: raw images in, class names and probabilities out.

A checkpoint of stage train wrapped as an MLflow pyfunc that pads and
normalises the images itself, as training did (Checkpoint.probabilities, with
the checkpoint's own mean and std), so a client needs neither. Input: uint8
images [N, 28, 28] as the dataset stores them; output: a table with the
predicted `class` and `p_<class>` for every class. Served with
`mlflow models serve -m <uri> --env-manager local`, it answers
`POST /invocations` with `{"inputs": [<28 rows of 28 pixels>, ...]}`.
https://mlflow.org/docs/latest/ml/traditional-ml/creating-custom-pyfunc/
"""

from pathlib import Path

import mlflow.models
import mlflow.pyfunc
import numpy as np

SOURCE = Path(__file__)  # MLflow logs this file as the model's code ("models from code")
PIPELINE = SOURCE.parent  # shipped with the model (code_paths): the pyfunc imports pipeline.*


class RawImageClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from pipeline.checkpoint import load_checkpoint

        self.checkpoint, self.model = load_checkpoint(context.artifacts["checkpoint"], "cpu")

    # np.ndarray: the signature's tensor spec decides what arrives (an array, or a dict of
    # one for a named input); an ndarray hint asks MLflow for no type-hint validation of
    # its own, and without any hint it warns at import, in every train stage's log
    def predict(self, context, model_input: np.ndarray, params=None):
        import pandas as pd
        import torch

        if isinstance(model_input, dict):  # a named input: its one array
            (model_input,) = model_input.values()
        images = torch.from_numpy(np.asarray(model_input, dtype=np.uint8).reshape(-1, 28, 28))
        probabilities = self.checkpoint.probabilities(self.model, images, "cpu").numpy()
        classes = self.checkpoint.classes
        table = pd.DataFrame({"class": [classes[i] for i in probabilities.argmax(1)]})
        for i, name in enumerate(classes):
            table[f"p_{name}"] = probabilities[:, i].astype(np.float64)
        return table


def signature(classes):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, 28, 28))]),
        outputs=Schema([ColSpec("string", "class"), *(ColSpec("double", f"p_{name}") for name in classes)]),
    )


# What MLflow loads when it runs this file as the logged model's code
# (https://mlflow.org/docs/latest/ml/model/models-from-code/); harmless on import.
mlflow.models.set_model(RawImageClassifier())
