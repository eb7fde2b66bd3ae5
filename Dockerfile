# llmbench container image: `llmbench agent` by default, any llmbench subcommand as arguments.
#   docker build -t llmbench:0.1.0 .
#   docker run --gpus all -p 50051:50051 -v /var/lib/llmbench/models:/models:ro llmbench:0.1.0 \
#       agent --model /models/Llama-3.1-8B-Instruct --host 0.0.0.0
# The torch wheel brings CUDA's user-space libraries; the base image carries the settings the
# NVIDIA container runtime reads, and the host supplies the driver. k8s/ runs this image.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/llmbench \
    PATH=/opt/llmbench/bin:$PATH

# gcc and the Python headers: Triton compiles a small launcher for its kernels at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/llmbench

# torch in its own layer: it is most of the image and changes least often.
ARG TORCH_SPEC="torch>=2.4"
RUN pip install "${TORCH_SPEC}"

# The sources .dockerignore lets through: pyproject.toml, README.md and the package folders.
COPY . /src/
RUN pip install /src && rm -rf /src

# Non-root (k8s runs it as 10001 with a read-only root filesystem: caches go under $HOME=/tmp).
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /tmp llmbench
ENV HOME=/tmp \
    XDG_CACHE_HOME=/tmp/cache \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051
ENTRYPOINT ["llmbench"]
CMD ["agent", "--model", "tiny", "--host", "0.0.0.0", "--port", "50051"]
