"""The MLflow pyfunc flavour of an exported model."""

from __future__ import annotations

import os

import mlflow.pyfunc
import pandas as pd

from mmsearch.serving._predictor import SERVE_IMAGE_ROOT_ENV, Bundle, ImageFiles, InputError, Predictor


class MmsearchModel(mlflow.pyfunc.PythonModel):
    """``predict`` takes a DataFrame with ImageID, Caption and (for image models) each row's
    image inline as ``image_base64`` (or as ``image_path`` under ``MMSEARCH_SERVE_IMAGE_ROOT`` when
    the server was started with one), and returns ImageID with space-separated Labels
    (the Kaggle format). Rows it cannot predict raise an MlflowException naming each of them."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        # Served, a request's image_path would read the server's disk: only under a folder its
        # operator names (MMSEARCH_SERVE_IMAGE_ROOT), else images come inline.
        self.predictor = Predictor(Bundle.load(context.artifacts["bundle"]),
                                   image_files=ImageFiles.served(os.environ.get(SERVE_IMAGE_ROOT_ENV)))

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict | None = None) -> pd.DataFrame:
        try:
            return self.predictor.predict(model_input)
        except InputError as exc:
            # MLflow's scoring server answers an MlflowException with its message and HTTP 400; any
            # other error becomes "an unexpected error" with the reason hidden in a stack trace.
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc
