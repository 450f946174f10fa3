# One image for every LoanStream service; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true HOME=/tmp
WORKDIR /app
# Every third-party package as a hashed wheel from the lock (its own layer, rebuilt only when the
# lock changes), then the project alone: --no-deps adds nothing, --no-build-isolation builds with
# the locked setuptools, so nothing unhashed enters the image.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip install --no-cache-dir --require-hashes --only-binary :all: -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY loanstream ./loanstream
COPY producer ./producer
COPY scorer ./scorer
COPY monitor ./monitor
COPY trainer ./trainer
COPY loop ./loop
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && mkdir -p /data && chown nobody /data
USER nobody
# Relative outputs (the producer's manifests in out/, reports) land in the data volume.
WORKDIR /data
CMD ["loanstream", "--help"]
