"""The MLflow pyfunc flavour of an exported model."""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd

from mmsearch.serving._predictor import Bundle, InputError, Predictor


class MmsearchModel(mlflow.pyfunc.PythonModel):
    """``predict`` takes a DataFrame with ImageID, Caption and (for image models) each row's
    image as ``image_path`` or ``image_base64``, and returns ImageID with space-separated Labels
    (the Kaggle format). Rows it cannot predict raise an MlflowException naming each of them."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.predictor = Predictor(Bundle.load(context.artifacts["bundle"]))

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
