"""Serve a study's model with vLLM, as the study would start the server itself, for a study that
connects to it from other machines (`engine.server_url`; launch/slurm_server.sh runs this on its
server node).

    python launch/serve.py --config CONFIG [--key value ...] [--host 0.0.0.0] [--port 8000] [--dry-run]

The model, dtype, context, tensor/data parallelism and extra `vllm serve` arguments come from the
study config's `engine` section (the same overrides as recipes/iterate.py); the server gets
VLLM_SERVER_DEV_MODE=1 (each round's checkpoint is reloaded in place through it) and mindgap's worker
extension. It runs in the foreground (exec) and answers on --host:--port.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python launch/serve.py` from the repository root
    sys.path.insert(0, str(ROOT))

from core.config import load_config  # noqa: E402
from core.errors import exit_on_user_error  # noqa: E402
from trainer.config import IterateConfig  # noqa: E402
from trainer.models import resolve_model  # noqa: E402
from trainer.samplers.vllm_server import VLLMServer  # noqa: E402


def _take(argv: list[str], name: str, default: str) -> str:
    """Remove `--name value` from argv; its value (or `default`)."""
    if name in argv:
        i = argv.index(name)
        value = argv[i + 1]
        del argv[i : i + 2]
        return value
    return default


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    host, port = _take(argv, "--host", "0.0.0.0"), int(_take(argv, "--port", "8000"))
    dry = "--dry-run" in argv
    if dry:
        argv.remove("--dry-run")
    cfg = load_config(IterateConfig, argv)
    model_dir = resolve_model(cfg.model)
    # a server of its own machine: it never sleeps (the study only sleeps servers it started itself)
    engine = replace(cfg.engine, sleep_during_training=False)
    server = VLLMServer(model_dir, engine, cfg.seed, port, log_path=Path(os.devnull), host=host)
    print(f"serving {model_dir} at http://{host}:{port}: {shlex.join(server.command)}", flush=True)
    if not dry:
        os.chdir(ROOT)
        os.execvpe(server.command[0], server.command, server.env)


if __name__ == "__main__":
    main()
