# trainpool: data-parallel training on every GPU of the host.
#   docker build -t trainpool .
#   docker run --gpus all -v ~/data:/data -v "$PWD/out":/out trainpool --gpus 4 --download --output /out/plot.png
# The base image comes from a build argument so that machines that cannot pull it can build on a local one
# (npm run test:docker does that with a debootstrapped Debian).
ARG BASE=node:20-bookworm-slim

FROM ${BASE} AS runtime
# libvulkan1 is the Vulkan loader that Dawn (the webgpu backend) talks to. The NVIDIA Container Toolkit
# mounts the driver's Vulkan ICD only when the "graphics" capability is asked for; "utility" brings
# nvidia-smi, which trainpool uses to find the GPUs. Mesa's Vulkan drivers come from bookworm-backports
# (Mesa 25) for their device-select layer, which gives each worker its own GPU by PCI address on a machine
# of identical GPUs (src/engine/gpu-selection.ts); Debian 12's own Mesa 22.3 selects the wrong device. The
# mirror is the base image's own.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    NVIDIA_VISIBLE_DEVICES=all \
    TRAINPOOL_DATA_DIR=/data \
    NODE_ENV=production
RUN uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null); \
    [ -n "$uri" ] || uri=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list); \
    echo "deb $uri bookworm-backports main" > /etc/apt/sources.list.d/bookworm-backports.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends libvulkan1 ca-certificates \
 && apt-get install -y --no-install-recommends -t bookworm-backports mesa-vulkan-drivers \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/trainpool
COPY package.json package-lock.json ./
# npm ci builds the optional shared-memory addon when the image has a C compiler (this slim one has none:
# the bulk regions then use read/write, tools/build-native.mjs says so in one line).
COPY tools/build-native.mjs ./tools/
COPY src/protocol/shm.c ./src/protocol/
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY bin ./bin
COPY src ./src
VOLUME ["/data", "/out"]
ENTRYPOINT ["/opt/trainpool/bin/train"]
CMD ["--help"]

# `--target selftest`: the image proves it can print the model and train (CPU workers, synthetic data).
FROM runtime AS selftest
RUN node --import tsx -e "import('./src/engine/gpu-selection.ts').then((m) => { const p = m.deviceSelectProblem(m.findDeviceSelectLayers()); if (p) { console.error(p); process.exit(1); } console.log('device-select layer: ready for several GPUs'); })" \
 && bin/train --summary | tail -4 \
 && bin/train --dataset synthetic --model tiny --gpus 0 --workers 2 --epochs 2 \
      --limit-train 512 --limit-test 256 --seed 1 --output /tmp/selftest/plot.png \
 && test -s /tmp/selftest/plot.png && test -s /tmp/selftest/plot.model/model.json

FROM runtime
