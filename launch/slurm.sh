#!/usr/bin/env bash
# A mindgap study on a Slurm cluster: one `accelerate launch` per node, one training process per GPU.
#
#   sbatch launch/slurm.sh recipes/configs/<study>.yaml [--key value ...]
#   sbatch --nodes=1 launch/slurm.sh recipes/configs/<study>.yaml          # one node
#   ACCELERATE_CONFIG=launch/zero3.yaml sbatch --nodes=1 launch/slurm.sh ...  # another accelerate config
#
# Submit from the repo root (launch/*.yaml name their DeepSpeed JSON relative to it), on storage every
# node mounts at the same path: every rank's engine loads the checkpoints rank 0 writes to output_dir
# (mindgap checks at start that every rank sees it; put MINDGAP_CACHE and the HF cache there too). The
# study resumes from its last finished stage, so resubmitting the same command after a preemption or
# time-out continues. A vLLM server node beside the training nodes: launch/slurm_server.sh.
#SBATCH --job-name=mindgap
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-.}"
[ $# -ge 1 ] || { echo "usage: sbatch launch/slurm.sh CONFIG.yaml [--key value ...]" >&2; exit 2; }

PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
  echo "error: no CUDA device on $(hostname) for $PYTHON (a venv set up on a CPU machine? see setup.sh)" >&2
  exit 2
}

export STUDY_CONFIG=$1
shift
export ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-launch/multi_node.yaml}
export NNODES=${SLURM_NNODES:-1}
export GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-$(nvidia-smi -L | wc -l)}}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export HEAD_NODE
export MAIN_PROCESS_PORT=${MAIN_PROCESS_PORT:-29500}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
export WANDB_MODE=${WANDB_MODE:-offline}  # `wandb login` on the head node and set WANDB_MODE=online to stream
CPUS=${SLURM_CPUS_PER_TASK:-8}  # srun does not inherit --cpus-per-task from sbatch (Slurm >= 22.05)

echo "mindgap: $NNODES node(s) x $GPUS_PER_NODE GPU(s), head $HEAD_NODE:$MAIN_PROCESS_PORT, $ACCELERATE_CONFIG"
# srun starts one task per node; SLURM_NODEID gives each its machine rank.
srun --kill-on-bad-exit=1 --cpus-per-task="$CPUS" bash -c '
  exec "$0" -m accelerate.commands.launch --config_file "$ACCELERATE_CONFIG" \
    --num_machines "$NNODES" --num_processes $((NNODES * GPUS_PER_NODE)) \
    --machine_rank "$SLURM_NODEID" --main_process_ip "$HEAD_NODE" --main_process_port "$MAIN_PROCESS_PORT" \
    recipes/iterate.py --config "$STUDY_CONFIG" "$@"
' "$PYTHON" "$@"
