#!/usr/bin/env bash
# Copied from the workplace's shared/device/soft-gpu.sh, so that CI and fresh clones need nothing outside the repository.
# Gives a GPU-less machine a software WebGPU adapter: Mesa's lavapipe Vulkan driver, new enough for Dawn.
# Debian 12's own Mesa (22.3) lacks features Dawn requires, so this takes mesa-vulkan-drivers from Debian's
# bookworm-backports suite, unpacked into a folder (the system's apt setup is left alone).
#   eval "$(bash tools/soft-gpu.sh [DIR])"   # exports VK_DRIVER_FILES and the device-select layer's; DIR defaults to /opt/soft-gpu
# Slow (a CPU pretending to be a GPU): good for correctness tests of WebGPU code, not for timing.
set -euo pipefail
dir=${1:-/opt/soft-gpu}
icd="$dir/lvp_icd.json"
if [ ! -f "$icd" ]; then
  ldconfig -p | grep -q libvulkan.so.1 || { apt-get update >/dev/null; apt-get install -y libvulkan1 >/dev/null; }
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  work=$(mktemp -d); mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri bookworm-backports main" > "$work/sources.list"
  o="-oAPT::Sandbox::User=root -oDir::Etc::SourceList=$work/sources.list -oDir::Etc::SourceParts=/dev/null -oDir::State::Lists=$work/lists -oDir::Cache=$work/cache"
  apt-get $o update >/dev/null
  (cd "$work" && apt-get $o download -t bookworm-backports mesa-vulkan-drivers >/dev/null 2>&1)
  mkdir -p "$dir"; dpkg -x "$work"/mesa-vulkan-drivers_*.deb "$dir"; rm -rf "$work"
  # The backported driver links against libraries of bookworm itself; bring any that are missing.
  missing=$(ldd "$dir/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so" | awk '/not found/ {print $1}')
  for so in $missing; do pkg=$(apt-file search -l "$so" 2>/dev/null | head -1); [ -n "$pkg" ] && apt-get install -y "$pkg" >/dev/null; done
  printf '{ "file_format_version": "1.0.0", "ICD": { "library_path": "%s", "api_version": "1.3.0" } }\n' \
    "$dir/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so" > "$icd"
fi
ldd "$dir/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so" | grep 'not found' >&2 && { echo "soft-gpu: missing libraries above" >&2; exit 1; }
# The same package's device-select layer (selecting a GPU per worker by PCI address, src/engine/gpu-selection.ts),
# found by the loader through XDG_DATA_DIRS. Debian 12's own Mesa (22.3), which `libvulkan1` pulls in, has an
# older one that selects the wrong device; NODEVICE_SELECT=1 turns that one off, so this one has a name and a
# switch (TRAINPOOL_NO_DEVICE_SELECT) of its own. Its library by absolute path: the loader would otherwise load
# the system's library of the same name.
layers="$dir/share/vulkan/implicit_layer.d"
if [ ! -f "$layers/trainpool_device_select.json" ]; then
  mkdir -p "$layers"
  sed -e "s#\"libVkLayer_MESA_device_select.so\"#\"$dir/usr/lib/x86_64-linux-gnu/libVkLayer_MESA_device_select.so\"#" \
      -e 's#"VK_LAYER_MESA_device_select"#"VK_LAYER_TRAINPOOL_MESA_device_select"#' -e 's#"NODEVICE_SELECT"#"TRAINPOOL_NO_DEVICE_SELECT"#' \
      "$dir/usr/share/vulkan/implicit_layer.d/VkLayer_MESA_device_select.json" > "$layers/trainpool_device_select.json"
fi
echo "export VK_DRIVER_FILES=$icd"
echo "export XDG_DATA_DIRS=$dir/share:${XDG_DATA_DIRS:-/usr/local/share:/usr/share}"
echo "export NODEVICE_SELECT=1"
