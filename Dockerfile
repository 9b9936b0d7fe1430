FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mmsearch mmsearch
COPY experiments experiments
COPY sweeps sweeps
# The CPU build of torch (about 200 MB instead of several GB of CUDA libraries); drop the index
# URL for a GPU image.
RUN pip install --no-cache-dir torch torchvision --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -e '.[postgres,redis]'
ENV MLFLOW_DISABLE_TELEMETRY=true
CMD ["mmsearch", "--help"]
