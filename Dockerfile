FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mmsearch mmsearch
COPY experiments experiments
COPY sweeps sweeps
COPY findings findings
# The CPU build of torch by default (about 200 MB instead of several GB of CUDA libraries); the
# compose file's worker-gpu service builds with a CUDA index instead.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir torch torchvision --index-url ${TORCH_INDEX} \
 && pip install --no-cache-dir -e '.[postgres,redis]'
ENV MLFLOW_DISABLE_TELEMETRY=true
CMD ["mmsearch", "--help"]
