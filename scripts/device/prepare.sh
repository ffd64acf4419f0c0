#!/usr/bin/env bash
# Run here before the GPU window (README.md beside this file), with the CPU queue stopped: it rewrites its
# run's resume pack every epoch, which would put it back into the tree that travels.
#   bash scripts/device/prepare.sh             # fill what the call carries, set the binary results aside, check
#   bash scripts/device/prepare.sh --restore   # after the call, before `rstn unpack`: the binary results back
# What it fills, each folder ignored through .git/info/exclude so that it travels only when named in carry:
#   .carry/mnist.pkl.gz   MNIST (the device machine has no network)
#   .whl/                 submitit, the one package the device's image lacks
#   .aside/               results/**/resume.pt and weights.safetensors (travel.py), never carried
# Then it checks that the tree the call takes, .carry and .whl in it, fits 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=.venv/bin/python
if [[ ${1:-} == --restore ]]; then
  exec "$py" scripts/device/travel.py restore
fi
if queue=$(pgrep -af "rstn train"); then
  echo "prepare: an rstn train is running (${queue}): it rewrites the resume packs that prepare.sh sets aside."
  echo "prepare: stop it first (its runs continue with --resume), then run prepare.sh again."
  exit 1
fi
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p .carry .whl "$(dirname "$exclude")"
touch "$exclude"
for folder in /.carry/ /.whl/; do
  grep -qxF "$folder" "$exclude" || echo "$folder" >> "$exclude"
done
cp "$(.venv/bin/rstn mnist)" .carry/mnist.pkl.gz
if ! compgen -G ".whl/submitit-1.5.4-*.whl" > /dev/null; then
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "submitit==1.5.4"
fi
"$py" scripts/device/travel.py aside
ls -l .carry .whl
"$py" scripts/device/travel.py size --carry .carry .whl
