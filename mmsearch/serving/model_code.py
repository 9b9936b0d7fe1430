"""MLflow "models from code" entry: MLflow runs this file to build the model, so no pickled
object is stored with an export (pickles break across versions and can run arbitrary code)."""

import mlflow.models

from mmsearch.serving._pyfunc import MmsearchModel

mlflow.models.set_model(MmsearchModel())
