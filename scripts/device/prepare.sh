#!/usr/bin/env bash
# Run here, before a GPU window: fill the git-ignored folders that the device calls carry.
#   .carry/mnist.pkl.gz   MNIST (the device machine has no network)
#   .whl/                 submitit, the one package the device's image lacks
# and list both in .git/info/exclude, so that they travel only when named in `carry`.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .carry .whl
for folder in /.carry/ /.whl/; do
  grep -qxF "$folder" .git/info/exclude || echo "$folder" >> .git/info/exclude
done
cp "$(.venv/bin/rstn mnist)" .carry/mnist.pkl.gz
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "submitit==1.5.4"
ls -l .carry .whl
