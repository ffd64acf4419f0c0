# Sourced by window.sh on the device machine (a bare one: python3 with torch, no network): the carried
# wheels, MNIST, where checkpoints and the output go, and what the machine is. Run from the repository root.
# Each setting that is already in the environment is kept (the dry run and a user's own GPU set their own).
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "setup: installing the carried wheels failed (run scripts/device/prepare.sh and carry .whl)"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
[[ -z ${RSTN_DATA_DIR:-} && -f .carry/mnist.pkl.gz ]] && export RSTN_DATA_DIR=$PWD/.carry
# no checkpoint of a heavy row can come back (81-200 MiB): they go to /tmp, outside the results
export RSTN_CHECKPOINT_DIR=${RSTN_CHECKPOINT_DIR:-/tmp/rstn-checkpoints}
export OUT=${OUT:-/tmp/rstn-window}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  || echo "setup: nvidia-smi failed (no GPU driver?)"
# torch's version and the device are the pre-flight's first line (one torch import the fewer)
python3 -c "import submitit; print('submitit', submitit.__version__)" \
  || { echo "setup: python3 lacks submitit (run scripts/device/prepare.sh and carry .whl)"; exit 1; }
