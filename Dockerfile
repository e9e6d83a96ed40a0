# One image for every part: `ocsim origin|control|edge|play|up|demo ...`, and Locust (`[load]`).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so editing the code does not re-install them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\\n'.join(p['dependencies'] + p['optional-dependencies']['load']))" > /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

COPY . .
RUN pip install ".[load]" \
    && useradd --system --uid 10001 --home-dir /var/lib/ocsim ocsim \
    && mkdir -p /var/lib/ocsim/origin /var/lib/ocsim/control /var/lib/ocsim/nats /var/lib/ocsim/pipeline \
       /var/cache/ocsim /secrets \
    && chown -R ocsim:ocsim /var/lib/ocsim /var/cache/ocsim /secrets

USER ocsim
EXPOSE 8000 8100 8101 8102 8201 8202 8089 8300 4222
ENTRYPOINT ["ocsim"]
CMD ["--help"]
