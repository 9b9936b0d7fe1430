FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mmsearch mmsearch
COPY experiments experiments
COPY sweeps sweeps
RUN pip install --no-cache-dir -e '.[postgres]'
ENV MLFLOW_DISABLE_TELEMETRY=true
CMD ["mmsearch", "--help"]
