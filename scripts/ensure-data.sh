#!/usr/bin/env bash
# Install Debian's dataset-fashion-mnist (the default data source in params.yaml)
# when it is missing and this user can; otherwise say how, and let stage
# download try the other sources (it fails with one line listing all it tried).
set -eu
folder=/usr/share/datasets/fashion-mnist
[ -f "$folder/train-images-idx3-ubyte.gz" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian's dataset-fashion-mnist (Fashion-MNIST's original IDX files) ..."
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
  echo "note: $folder is missing; to get Fashion-MNIST offline run:" \
       "sudo apt-get install dataset-fashion-mnist (stage download will try its mirrors)" >&2
fi
