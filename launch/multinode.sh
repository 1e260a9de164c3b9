#!/usr/bin/env bash
# Start one node of a multi-node run; run this same script on every node.
#
#   NNODES=4 NODE_RANK=<0..3> MASTER_ADDR=<node 0 host> launch/multinode.sh recipes/ppo_medqa.py \
#       --config recipes/configs/ppo_qwen2.5-3b.yaml
#
# The paper's scale is 4 nodes x 8 A100-40GB = 32 processes (reference: Med-RLVR, "4x40G8"):
# NNODES=4 GPUS_PER_NODE=8 with the default ZeRO-3 config. Checkpoints go to output_dir, which
# must be on a filesystem all nodes share; re-running the same command resumes.
set -euo pipefail
: "${NNODES:?set NNODES (number of nodes)}"
: "${NODE_RANK:?set NODE_RANK (0 on the main node)}"
: "${MASTER_ADDR:?set MASTER_ADDR (host name or IP of node 0)}"
MASTER_PORT=${MASTER_PORT:-29500}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-$(dirname "$0")/zero3.yaml}
# Cached blocks of changing sizes (rollout chunks, responses of every length) fragment the allocator;
# expandable segments let it grow blocks in place (PyTorch CUDA memory-management docs).
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}

exec accelerate launch \
    --config_file "$ACCELERATE_CONFIG" \
    --num_machines "$NNODES" \
    --machine_rank "$NODE_RANK" \
    --num_processes $((NNODES * GPUS_PER_NODE)) \
    --main_process_ip "$MASTER_ADDR" \
    --main_process_port "$MASTER_PORT" \
    "$@"
