# natter: one image for every process; the command picks which (gateway, auth, chat, notify).
#
#   docker build -t natter .                         (python:3.12-slim from a registry)
#   podman build --build-arg BASE_IMAGE=localhost/natter-base/python:3.11 \
#       --secret id=pipca,src=/etc/ssl/certs/ca-certificates.crt -t natter .
#
# BASE_IMAGE must provide python3 (>= 3.11) with the venv module, /bin/sh and useradd; both
# stages use it, so the virtualenv's interpreter path is the same in both. The optional build
# secret `pipca` is a CA bundle for pip (a TLS-intercepting proxy); without it pip uses its own.
# See docs/deploy.md.
ARG BASE_IMAGE=python:3.12-slim

# --- builder: a virtualenv with natter and its dependencies -------------------------------------
FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/natter
WORKDIR /src

# Dependencies first, read from pyproject.toml: this layer is rebuilt only when they change.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pipca \
    if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi \
    && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && /opt/natter/bin/pip install -r /tmp/requirements.txt "setuptools>=68" wheel

# Then natter itself (no network: dependencies and build backend are already installed).
COPY README.md ./
COPY shared ./shared
COPY gateway ./gateway
COPY auth_service ./auth_service
COPY chat_service ./chat_service
COPY notify_service ./notify_service
COPY natter ./natter
RUN /opt/natter/bin/pip install --no-deps --no-build-isolation . \
    && /opt/natter/bin/pip uninstall --yes setuptools wheel pip \
    && /opt/natter/bin/natter version

# --- runtime: the virtualenv on a clean base, as an unprivileged user -----------------------------
FROM ${BASE_IMAGE}
ENV PATH=/opt/natter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 natter \
    && useradd --system --uid 10001 --gid natter --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin natter
COPY --from=builder /opt/natter /opt/natter
USER natter:natter
WORKDIR /tmp
EXPOSE 8000
# SIGTERM: the gateway closes its sockets 1012 and drains; services finish in-flight requests.
STOPSIGNAL SIGTERM
ENTRYPOINT ["natter"]
CMD ["gateway", "--host", "0.0.0.0", "--port", "8000"]
