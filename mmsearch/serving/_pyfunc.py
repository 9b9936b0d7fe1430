"""The MLflow pyfunc flavour of an exported model."""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd

from mmsearch.serving._predictor import Bundle, Predictor


class MmsearchModel(mlflow.pyfunc.PythonModel):
    """``predict`` takes a DataFrame with ImageID, Caption and (for image models) image_path,
    and returns ImageID with space-separated Labels (the Kaggle format)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.predictor = Predictor(Bundle.load(context.artifacts["bundle"]))

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict | None = None) -> pd.DataFrame:
        return self.predictor.predict(model_input)
