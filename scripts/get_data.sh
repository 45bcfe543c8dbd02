#!/usr/bin/env bash
# Make sure Fashion-MNIST is on disk: keep a copy that is already found; else, as root on Debian or
# Ubuntu, install the `dataset-fashion-mnist` package; else let torchvision download it into data/.
# Prints the folder in use, or one paragraph saying how to get the files.
set -euo pipefail
PY=${PY:-.venv/bin/python}
find_local() { "$PY" -c 'from fashion_lightning.data.idx import find_data_dir; print(find_data_dir(download=False))' 2>/dev/null; }

if dir=$(find_local); then echo "Fashion-MNIST: $dir"; exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -z "${FASHION_MNIST_DIR:-}" ]; then
    echo "Installing Debian's dataset-fashion-mnist ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null \
        || echo "apt-get could not install dataset-fashion-mnist; trying a download instead."
fi
if dir=$(find_local); then echo "Fashion-MNIST: $dir"; exit 0; fi
dir=$("$PY" -m fashion_lightning.data.idx) || exit 1  # the error paragraph is on stderr
echo "Fashion-MNIST: $dir"
