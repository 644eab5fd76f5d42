# diffgap: the gRPC service with its libtorch (from the pinned PyPI wheel) and the default model.
#   docker build -t diffgap .
#   docker run -p 50051:50051 diffgap
# The torch wheel carries the CUDA libraries, so the same image uses a GPU when the container is
# started with one (`--gpus all`) and the CPU otherwise.

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv && rm -rf /var/lib/apt/lists/*
# The same path at build and run time: the binary's rpath points into the virtual environment.
WORKDIR /opt/diffgap
COPY scripts/setup.sh scripts/env.sh scripts/
RUN bash scripts/setup.sh
COPY . .
RUN bash -c 'source scripts/env.sh && cargo build --release --locked && bash scripts/build-default-model.sh'

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /opt/diffgap diffgap
WORKDIR /opt/diffgap
# Only the shared libraries of the wheel (torch/lib and the nvidia-* CUDA libraries), not Python.
COPY --from=build /opt/diffgap/.venv/lib/python3.11/site-packages/torch/lib .venv/lib/python3.11/site-packages/torch/lib
COPY --from=build /opt/diffgap/.venv/lib/python3.11/site-packages/nvidia .venv/lib/python3.11/site-packages/nvidia
COPY --from=build /opt/diffgap/target/release/diffgap /usr/local/bin/diffgap
COPY --from=build /opt/diffgap/models/default models/default
USER diffgap
EXPOSE 50051
ENV DIFFGAP_LISTEN=0.0.0.0:50051 DIFFGAP_MODEL=/opt/diffgap/models/default
ENTRYPOINT ["diffgap", "serve"]
