# ehswatch service image (also runs the simulators: `ehswatch simulate`).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ehswatch ./ehswatch
RUN pip install '.[postgresql]' && useradd --system --home /app ehswatch && mkdir -p /app/var && chown ehswatch /app/var
COPY config ./config
USER ehswatch
EXPOSE 8000
ENTRYPOINT ["ehswatch"]
CMD ["run", "--config", "/config/docker.yaml"]
