# trainpool: data-parallel training on every GPU of the host.
#   docker build -t trainpool .
#   docker run --gpus all -v ~/data:/data -v "$PWD/out":/out trainpool --gpus 4 --download --output /out/plot.png
# The base image comes from a build argument so that machines that cannot pull it can build on a local one
# (npm run test:docker does that with a debootstrapped Debian).
ARG BASE=node:20-bookworm-slim

FROM ${BASE} AS runtime
# libvulkan1 is the Vulkan loader that Dawn (the webgpu backend) talks to. The NVIDIA Container Toolkit
# mounts the driver's Vulkan ICD only when the "graphics" capability is asked for; "utility" brings
# nvidia-smi, which trainpool uses to find the GPUs.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    NVIDIA_VISIBLE_DEVICES=all \
    TRAINPOOL_DATA_DIR=/data \
    NODE_ENV=production
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvulkan1 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/trainpool
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY bin ./bin
COPY src ./src
VOLUME ["/data", "/out"]
ENTRYPOINT ["/opt/trainpool/bin/train"]
CMD ["--help"]

# `--target selftest`: the image proves it can print the model and train (CPU workers, synthetic data).
FROM runtime AS selftest
RUN bin/train --summary | tail -4 \
 && bin/train --dataset synthetic --model tiny --gpus 0 --workers 2 --epochs 2 \
      --limit-train 512 --limit-test 256 --seed 1 --output /tmp/selftest/plot.png \
 && test -s /tmp/selftest/plot.png && test -s /tmp/selftest/plot.model/model.json

FROM runtime
