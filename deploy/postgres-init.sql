-- MLflow and Optuna both keep an alembic_version table: each gets a database of its own.
CREATE DATABASE optuna;
