# Sourced at the start of every device call (a bare machine): the carried wheels, MNIST, and where
# checkpoints and the output go. Run from the repository root.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "setup: installing the carried wheels failed (run scripts/device/prepare.sh and carry .whl)"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export RSTN_DATA_DIR=$PWD/.carry RSTN_CHECKPOINT_DIR=/tmp/rstn-checkpoints
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, submitit; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'submitit', submitit.__version__)"
