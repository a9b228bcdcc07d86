# The image of every shopvec worker (indexer, query, behaviour) and of the `shopvec` command.
#
#   docker build -t shopvec:latest .                                   # CPU-only torch (default)
#   docker build --build-arg TORCH_VARIANT=cuda -t shopvec:cuda .      # CUDA torch, see below
#
# Dependencies come from requirements-lock.txt (`./dev lock` makes it from pyproject.toml): every
# package pinned, installed with pip --require-hashes, the same lock ./dev and CI install from.
#
# Build arguments
#   TORCH_VARIANT     cpu (default): torch and torchvision come from the PyTorch CPU index
#                     (TORCH_CPU_INDEX), at the lock's versions, a much smaller image with no
#                     CUDA libraries; their hashes there differ from the lock's (which are the
#                     default index's), so these two are pinned by version only. Everything
#                     else, less the CUDA packages, comes from the lock with its hashes.
#                     cuda: the whole lock, hashes included: the default index's Linux x86_64
#                     torch is a CUDA build that carries the CUDA runtime as pip packages; the
#                     host needs only the NVIDIA driver and the NVIDIA container toolkit.
#   TORCH_CPU_INDEX   the index for TORCH_VARIANT=cpu.
#   TORCH_CUDA_INDEX  optional, for TORCH_VARIANT=cuda: a PyTorch index that pins one CUDA
#                     version (for example .../whl/cu128); torch, torchvision and their CUDA
#                     packages then come from it by version, outside the lock's hashes; empty
#                     means the lock, hashes included.
#   MODEL_DIR         a folder in the build context copied to /models in the image: bake the
#                     weights of the "clip" encoder backend into the image by putting the
#                     checkpoint folder under models/ (models/clip-vit-b-32/) and passing
#                     MODEL_DIR=models. The default copies a folder with only a note in it;
#                     the "offline" backend needs nothing here (its weights ship in pip packages).
#                     Weights can instead be mounted at /models at run time (docker-compose.yml,
#                     k8s/components/clip-weights).
#   PYTHON_IMAGE      the base image of both stages (they must match: the virtual environment
#                     is copied from one to the other).
#
# The torch and torchvision versions are not repeated here: they are read from the lock.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ARG TORCH_VARIANT=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_CUDA_INDEX=

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The code lives in /app in both stages: it is installed in editable mode, so the paths it
# derives from its own location (the demo catalogue in /app/data) hold in the image too.
WORKDIR /app

# Dependencies first, in their own layer, so a change of the code does not reinstall torch.
COPY pyproject.toml README.md requirements-lock.txt ./
COPY deploy/lock_subset.py /tmp/lock_subset.py
RUN set -eu; \
    subset="python /tmp/lock_subset.py requirements-lock.txt"; \
    $subset --only --pins torch torchvision > /tmp/torch.txt; \
    case "$TORCH_VARIANT" in \
      cpu) pip install --no-deps --index-url "$TORCH_CPU_INDEX" -r /tmp/torch.txt; \
           $subset torch torchvision triton 'nvidia-*' 'cuda-*' > /tmp/requirements.txt ;; \
      cuda) if [ -n "$TORCH_CUDA_INDEX" ]; then \
              pip install --index-url "$TORCH_CUDA_INDEX" -r /tmp/torch.txt; \
              $subset torch torchvision triton 'nvidia-*' 'cuda-*' > /tmp/requirements.txt; \
            else \
              cp requirements-lock.txt /tmp/requirements.txt; \
            fi ;; \
      *) echo "TORCH_VARIANT must be cpu or cuda, not '$TORCH_VARIANT'" >&2; exit 2 ;; \
    esac; \
    pip install --require-hashes -r /tmp/requirements.txt

COPY shopvec ./shopvec
COPY schemas ./schemas
COPY workers ./workers
RUN pip install --no-deps -e . && python -c "import shopvec.settings, schemas.wire, workers"

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG MODEL_DIR=deploy/models

# tini is PID 1: it forwards SIGTERM to the worker (which drains, flushes and commits) and
# reaps any child processes.
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends tini; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 shopvec; \
    useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin shopvec

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app

WORKDIR /app
# The demo catalogue, so that `shopvec demo` works inside the stack.
COPY data/myntra-fashion-1000 ./data/myntra-fashion-1000
COPY ${MODEL_DIR}/ /models/

# HOME and the caches point at /tmp so that the root file system can be mounted read-only;
# the hub is switched off: weights come from /models or from installed packages, never
# from a download at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCH_HOME=/tmp/.cache/torch \
    HF_HOME=/tmp/.cache/huggingface \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

USER 10001:10001

# settings.ops.port: /healthz, /readyz and /metrics.
EXPOSE 8000

ENTRYPOINT ["/usr/bin/tini", "--"]
# docker-compose.yml and the Kubernetes Deployments replace this with the worker they run.
CMD ["python", "-m", "workers.indexer"]
