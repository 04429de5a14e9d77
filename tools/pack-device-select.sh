#!/usr/bin/env bash
# After ../shared/device/pack.sh: adds Mesa 25's device-select Vulkan layer, and the few libraries it links
# that a GPU machine without X may lack, to .device-bundle/device-select/ (under 1 MB), for
# bench/gpu-selection-check.ts on the GPU machine, which has no Mesa of its own. The layer comes from the
# same bookworm-backports package as the software GPU (tools/soft-gpu.sh).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
eval "$(bash tools/soft-gpu.sh)"
lib=/opt/soft-gpu/usr/lib/x86_64-linux-gnu/libVkLayer_MESA_device_select.so
out=.device-bundle/device-select
rm -rf "$out"; mkdir -p "$out"
cp "$lib" "$out/"
# Everything it links but the C library itself, which the GPU machine's own must provide.
for dep in $(ldd "$lib" | awk '$3 ~ /^\// {print $3}'); do
  case $(basename "$dep") in libc.so.*|libpthread.so.*|libm.so.*|libdl.so.*|ld-linux*) ;; *) cp -L "$dep" "$out/" ;; esac
done
# The Vulkan version its manifest declares: gpu-selection-check.ts writes the manifest there.
sed -n 's/.*"api_version" *: *"\([^"]*\)".*/\1/p' /opt/soft-gpu/usr/share/vulkan/implicit_layer.d/VkLayer_MESA_device_select.json > "$out/api_version"
echo "device-select layer packed: $(ls "$out" | tr '\n' ' ')($(du -sh "$out" | cut -f1))"
