# One image for every LoanStream service; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true HOME=/tmp
WORKDIR /app
COPY pyproject.toml README.md ./
COPY loanstream ./loanstream
COPY producer ./producer
COPY scorer ./scorer
COPY monitor ./monitor
COPY trainer ./trainer
COPY loop ./loop
RUN pip install --no-cache-dir . && mkdir -p /data && chown nobody /data
USER nobody
# Relative outputs (the producer's manifests in out/, reports) land in the data volume.
WORKDIR /data
CMD ["loanstream", "--help"]
