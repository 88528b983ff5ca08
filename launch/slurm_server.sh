#!/usr/bin/env bash
# A mindgap study on a Slurm cluster with a vLLM server node: the job's first node serves the model
# with vLLM (tensor parallel over its GPUs, `engine.tensor_parallel_size`; replicas with
# `engine.data_parallel_size`), the other nodes train with `accelerate launch` (one process per GPU,
# launch/multi_node.yaml: ZeRO-2 across nodes) and send it their sampling and verification requests
# (`engine.backend: vllm_server`, `engine.server_url` pointing at the server node).
#
#   sbatch --nodes=3 launch/slurm_server.sh recipes/configs/<study>.yaml [--key value ...]
#   SERVER_PORT=8100 ACCELERATE_CONFIG=launch/multi_node.yaml sbatch --nodes=5 launch/slurm_server.sh ...
#
# Submit from the repository root, on storage every node mounts at the same path: the server node
# reloads each round's checkpoint from output_dir, which the training nodes write (mindgap checks at
# start that every rank sees output_dir; put MINDGAP_CACHE and the HF cache there too). Resubmitting
# the same command resumes the study, whichever node serves this time.
#SBATCH --job-name=mindgap-server
#SBATCH --nodes=3
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-.}"
[ $# -ge 1 ] || { echo "usage: sbatch --nodes=N launch/slurm_server.sh CONFIG.yaml [--key value ...]" >&2; exit 2; }
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
  echo "error: no CUDA device on $(hostname) for $PYTHON (a venv set up on a CPU machine? see setup.sh)" >&2
  exit 2
}
[ "${SLURM_NNODES:-1}" -ge 2 ] || { echo "error: this layout needs 2 nodes or more (one serves)" >&2; exit 2; }

export STUDY_CONFIG=$1
shift
mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
SERVER_NODE=${NODES[0]}
export HEAD_NODE=${NODES[1]}
export SERVER_PORT=${SERVER_PORT:-8000}
export SERVER_URL="http://$SERVER_NODE:$SERVER_PORT"
export ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-launch/multi_node.yaml}
export TRAIN_NODES=$((SLURM_NNODES - 1))
export GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-$(nvidia-smi -L | wc -l)}}
export MAIN_PROCESS_PORT=${MAIN_PROCESS_PORT:-29500}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
export WANDB_MODE=${WANDB_MODE:-offline}
CPUS=${SLURM_CPUS_PER_TASK:-8}  # srun does not inherit --cpus-per-task from sbatch (Slurm >= 22.05)

echo "mindgap: vLLM server on $SERVER_NODE:$SERVER_PORT; $TRAIN_NODES training node(s) x $GPUS_PER_NODE GPU(s), head $HEAD_NODE"
srun --nodes=1 --ntasks=1 --cpus-per-task="$CPUS" --nodelist="$SERVER_NODE" \
  "$PYTHON" launch/serve.py --config "$STUDY_CONFIG" "$@" --host 0.0.0.0 --port "$SERVER_PORT" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 180); do  # up to 30 minutes for a large model to load
  "$PYTHON" -c "import httpx, sys; sys.exit(httpx.get('$SERVER_URL/health', timeout=5).status_code != 200)" \
    2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { echo "error: the vLLM server on $SERVER_NODE exited while starting" >&2; exit 1; }
  sleep 10
done

# One `accelerate launch` per training node; SLURM_PROCID (0 .. TRAIN_NODES-1) is its machine rank.
srun --nodes="$TRAIN_NODES" --ntasks="$TRAIN_NODES" --ntasks-per-node=1 --cpus-per-task="$CPUS" \
  --exclude="$SERVER_NODE" --kill-on-bad-exit=1 bash -c '
  exec "$0" -m accelerate.commands.launch --config_file "$ACCELERATE_CONFIG" \
    --num_machines "$TRAIN_NODES" --num_processes $((TRAIN_NODES * GPUS_PER_NODE)) \
    --machine_rank "$SLURM_PROCID" --main_process_ip "$HEAD_NODE" --main_process_port "$MAIN_PROCESS_PORT" \
    recipes/iterate.py --config "$STUDY_CONFIG" "$@" --engine.backend vllm_server --engine.server_url "$SERVER_URL"
' "$PYTHON" "$@"
