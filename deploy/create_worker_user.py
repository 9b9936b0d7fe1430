"""Give the sweep workers an MLflow account of their own (run once by docker-compose.yml's
``mlflow-users`` service, with the admin's credentials): the workers never hold the admin's
password, and what they create (the sweeps' experiments and runs) is theirs to write, while any
other account sees nothing until an admin grants it (basic_auth.ini: NO_PERMISSIONS).

Idempotent: an existing worker account gets the password from .env again.
"""

import os
import sys

from mlflow.exceptions import RestException
from mlflow.server import get_app_client

uri = os.environ["MLFLOW_TRACKING_URI"]
user, password = os.environ["MLFLOW_WORKER_USERNAME"], os.environ["MLFLOW_WORKER_PASSWORD"]
client = get_app_client("basic-auth", tracking_uri=uri)  # as MLFLOW_TRACKING_USERNAME (the admin)
try:
    client.create_user(username=user, password=password)
    print(f"created the MLflow account {user!r} for the workers on {uri}")
except RestException as exc:
    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
        sys.exit(f"cannot create the MLflow account {user!r} on {uri}: {exc}")
    client.update_user_password(username=user, password=password)
    print(f"the MLflow account {user!r} exists on {uri}: its password is the one in .env")
