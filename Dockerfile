# syntax=docker/dockerfile:1
# One image for every part of kvtune: `kvtune operator` and `kvtune webhook` (Deployments) and
# `kvtune agent` (the DaemonSet the operator creates). One image means one version to roll out
# and one SBOM.
#
#   docker build -t kvtune:dev .
#
# Reproducible as far as a Dockerfile can make it: the base image is pinned by digest (a tag can
# be re-pushed), every Python package is pinned in image-constraints.txt and installed without
# dependency resolution, wheels and bytecode carry no build time (SOURCE_DATE_EPOCH, hash-based
# .pyc). The digest is the one public Dockerfiles pin for this tag; no registry is reachable
# where kvtune is developed, so confirm it when you first build (`docker buildx imagetools
# inspect python:3.11.13-slim-bookworm`) and move tag and digest together. Debian's libvirt0
# and the builder's compiler come from the bookworm point release of the day: point apt at
# snapshot.debian.org to freeze those too.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

FROM ${PYTHON_IMAGE} AS builder
ARG SOURCE_DATE_EPOCH=0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH}
# libvirt-python has no wheels on PyPI: it compiles against libvirt-dev (found by pkg-config)
# and Python's headers. The python images carry the headers; a Debian base with Debian's python3
# (hack/build-node-images.sh) gets python3-dev here, so that the final image, which shares the
# base, does not carry them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libvirt-dev pkg-config \
    $(python -c 'import os, sysconfig; \
      print("" if os.path.exists(sysconfig.get_paths()["include"] + "/Python.h") else "python3-dev")') \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies before the source, so that their layer survives a change of kvtune's code.
# --no-deps: a package missing from the constraints fails `pip check` below instead of being
# pulled in at whatever version PyPI serves that day.
COPY image-constraints.txt ./
RUN python -m venv /opt/kvtune \
 && /opt/kvtune/bin/pip install --no-deps --no-compile -r image-constraints.txt
COPY pyproject.toml README.md ./
COPY api/ api/
COPY node-agent/ node-agent/
COPY operator/ operator/
COPY cli/ cli/
# The same wheel tests/deploy/test_image.py builds, so a packaging mistake fails a test first.
RUN /opt/kvtune/bin/pip wheel --no-deps -w /wheels . \
 && /opt/kvtune/bin/pip install --no-deps --no-compile /wheels/kvtune-*.whl \
 && /opt/kvtune/bin/pip check \
 && /opt/kvtune/bin/python -m compileall -q --invalidation-mode unchecked-hash /opt/kvtune/lib

FROM ${PYTHON_IMAGE}
# Only libvirt's client library: the agent talks to each VM's virtqemud over its socket; no
# daemon, compiler or headers ship in the final image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /opt/kvtune /opt/kvtune
ENV PATH=/opt/kvtune/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Non-root by default (the distroless "nonroot" id): operator and webhook run as is; the agent's
# DaemonSet asks for root and privileges explicitly, where they are visible and reviewed. The id
# gets a passwd and group entry, as in distroless: kopf names its peering identity after the
# user (getpass.getuser(), which raises for a uid without one), so without it the operator and
# the webhook crash at start.
RUN echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'nonroot:x:65532:' >> /etc/group
USER 65532:65532
ENTRYPOINT ["kvtune"]
CMD ["--help"]
