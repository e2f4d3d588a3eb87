# The example TTS worker (examples/python-worker) with the OpenTelemetry SDK
# and OTLP exporter, so its task and inference spans join the sidecar's
# traces. The offline engine speaks with espeak-ng; real engines (IndexTTS2,
# GLM-TTS) need their own image with the model and CUDA.
# Build from the repository root:
#   docker build -f deploy/worker.Dockerfile -t baton-tts-worker:dev .
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng \
 && rm -rf /var/lib/apt/lists/*
# The same pins as the Makefile's deps-py (the versions the tests run with).
RUN pip install --no-cache-dir \
      opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-grpc==1.45.2
COPY clients/python /app/clients/python
COPY examples/python-worker /app/examples/python-worker
ENV PYTHONPATH=/app/clients/python:/app/examples/python-worker \
    PYTHONUNBUFFERED=1
WORKDIR /app
ENTRYPOINT ["python", "-m", "tts_worker"]
CMD ["--engine", "offline", "--queue", "tts", "--out-dir", "/out"]
