# The podnet image: one image for the control plane, the node agents and the client commands
# (see docker-compose.yml and docker/entrypoint.sh).
#
#   docker build -t podnet .                               pip installs from PyPI
#   docker build --build-arg BASE=my-python:3.11 -t podnet .
#
# BASE needs python3 (3.11+) with the venv module. Offline builds: put wheels of podnet and its
# dependencies in ./wheelhouse (`pip wheel -w wheelhouse '.[fast]'`) and build with
# `--network none`; pip then installs from there only.
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/podnet/bin:$PATH \
    PODNET_STATE_DIR=/var/lib/podnet

COPY . /tmp/src
RUN python3 -m venv /opt/podnet \
    && if ls /tmp/src/wheelhouse/*.whl >/dev/null 2>&1; then \
         /opt/podnet/bin/pip install --no-cache-dir --no-index \
           --find-links /tmp/src/wheelhouse 'podnet[fast]'; \
       else \
         /opt/podnet/bin/pip install --no-cache-dir '/tmp/src[fast]'; \
       fi \
    && install -m 0755 /tmp/src/docker/entrypoint.sh /usr/local/bin/podnet-entrypoint \
    && cp -r /tmp/src/examples /examples \
    && rm -rf /tmp/src \
    && mkdir -p /var/lib/podnet/logs /var/lib/podnet/cluster \
    && podnet --version

WORKDIR /var/lib/podnet
EXPOSE 6443 6444 7000 10053/udp 10053/tcp
ENTRYPOINT ["podnet-entrypoint"]
CMD ["podnet", "--help"]
