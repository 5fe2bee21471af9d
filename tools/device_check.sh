#!/usr/bin/env bash
# The GPU or TPU check in one command, for a machine with an accelerator:
#   1. PerformerAttention against MultiHeadAttention (whole layers) and
#      favor_attention against keras.ops.dot_product_attention (the ops),
#      bidirectional and causal, XLA-compiled, TensorFlow; then the ops on
#      PyTorch with flash attention where PyTorch sees a GPU (Keras has no
#      flash attention on TensorFlow);
#   2. a short training run of PerformerCausalLM under MirroredStrategy
#      with jit_compile=True and feature redraws;
#   3. generation, PerformerCausalLM against keras-hub's GPT-2 through the
#      same generate call.
# JSON (and PNG) into $OUT_* (default docs/device_*). SMALL=1 runs tiny
# settings (a check of the script itself, on any machine).
#
#   bash tools/device_check.sh            # or: make device-check
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-docs/device}
if [ "${SMALL:-0}" = 1 ]; then
  LENGTHS=64,128 SIZES="--heads=2 --dim=8 --features=8 --chunk_size=16 --repeats=1 --matmul_size=64"
  TRAIN="--steps=4 --batch_size=4 --sequence_length=16 --hidden_dim=16 --interval=2"
  GENERATE="--generate_positions=8 --generate_tokens=2 --generate_layers=1 --generate_vocabulary=16 --heads=2 --dim=8 --features=8 --repeats=1 --matmul_size=64"
else
  LENGTHS=1024,4096,16384,65536 SIZES="" TRAIN="--steps=60"
  GENERATE="--generate_positions=1000,4000,16000 --repeats=3"
fi
export KERAS_BACKEND=tensorflow
"$PY" -c "import tensorflow as tf; print('devices:', [d.name for d in tf.config.list_logical_devices()])"
for level in layer op; do
  "$PY" tools/benchmark.py --level=$level --modes=bidirectional,causal \
    --lengths=$LENGTHS --compile=xla $SIZES --output="${OUT}_$level"
done
if KERAS_BACKEND=torch "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  KERAS_BACKEND=torch "$PY" tools/benchmark.py --level=op \
    --modes=bidirectional,causal --lengths=$LENGTHS --flash_attention=true \
    $SIZES --output="${OUT}_op_torch_flash"
else
  echo "PyTorch sees no GPU: no flash-attention baseline"
fi
"$PY" tools/train_distributed.py --strategy=mirrored --jit_compile=true \
  $TRAIN --output="${OUT}_train_mirrored_xla.json"
"$PY" tools/benchmark.py --lengths= --compile=xla $GENERATE \
  --output="${OUT}_generation"
echo "wrote ${OUT}_*"
