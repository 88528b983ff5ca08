"""Model resolution: the embedded model, local dirs and GGUF files, hub ids, and the errors users see."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import UserError
from tests.conftest import ROOT
from trainer.models import _packaged_gguf, resolve_model


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@pytest.mark.slow
def test_embedded_model_converts_once_and_loads(smollm2_dir):
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    again = resolve_model("smollm2-135m-instruct")
    assert time.perf_counter() - t0 < 1.0  # served from the cache, no conversion
    assert again == smollm2_dir
    assert resolve_model("SmolLM2-135M-Instruct") == smollm2_dir  # aliases are case-insensitive
    assert (smollm2_dir / "config.json").is_file()
    assert list(smollm2_dir.glob("*.safetensors"))

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    n_params = model.num_parameters()
    assert 134.0e6 < n_params < 135.0e6, n_params  # 134.5M


@pytest.mark.slow
def test_concurrent_conversion_of_a_local_gguf(tmp_path, smollm2_dir, monkeypatch):
    """Two processes converting the same GGUF file into a fresh cache at once both get the same dir.

    The file is the packaged model's GGUF, passed as a local path: this covers local `.gguf` files, and
    the result must equal the embedded alias's conversion byte for byte.
    """
    gguf = _packaged_gguf("smollm2-135m-instruct", tmp_path)
    cache = tmp_path / "cache"
    # What a conversion killed mid-way leaves: its scratch dir (an assembled GGUF) and its half-built dir.
    name = f"{gguf.stem}-{hashlib.sha1(str(gguf.resolve()).encode()).hexdigest()[:10]}"
    for stale in (f".{name}-gguf.k1ll3d00", f".{name}.k1ll3d00"):
        (cache / "models" / stale).mkdir(parents=True)
        (cache / "models" / stale / "partial").write_bytes(b"x")
    env = {**os.environ, "MINDGAP_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false"}
    code = "import sys; from trainer.models import resolve_model; print(resolve_model(sys.argv[1]))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(gguf)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-2000:]
    dirs = [Path(out.strip().splitlines()[-1]) for out, _ in results]
    assert dirs[0] == dirs[1]
    out_dir = dirs[0]
    assert out_dir.parent == cache / "models"
    assert out_dir.name.startswith("SmolLM2-135M-Instruct.Q4_1-")
    # Exactly one model dir: no temp dir left behind by the process that lost the race, nor by the killed one.
    assert sorted(p.name for p in (cache / "models").iterdir() if p.is_dir()) == [out_dir.name]
    config = json.loads((out_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert _sha1(out_dir / "model.safetensors") == _sha1(smollm2_dir / "model.safetensors")
    # A third call finds it converted.
    monkeypatch.setenv("MINDGAP_CACHE", str(cache))
    t0 = time.perf_counter()
    assert resolve_model(str(gguf)) == out_dir
    assert time.perf_counter() - t0 < 1.0


def test_local_model_dir_is_returned_as_is(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)) == tmp_path


@pytest.mark.parametrize("ref", ["/nonexistent/mindgap-model", "./no-such-model-dir", "~/no/such/model/dir"])
def test_missing_path_is_a_user_error_naming_it(ref):
    with pytest.raises(UserError, match="does not exist") as e:
        resolve_model(ref)
    assert ref in str(e.value)


def test_missing_gguf_file_is_a_user_error_naming_it(tmp_path):
    ref = str(tmp_path / "absent.gguf")
    with pytest.raises(UserError) as e:
        resolve_model(ref)
    assert ref in str(e.value)


def test_dir_without_config_json_is_a_user_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="config.json") as e:
        resolve_model(str(tmp_path))
    assert str(tmp_path) in str(e.value)


@pytest.mark.parametrize("ref", ["", None])
def test_empty_reference_is_a_user_error(ref):
    with pytest.raises(UserError):
        resolve_model(ref)


def test_hub_id_while_offline_is_a_user_error_saying_so(tmp_path):
    """A fresh process with HF_HUB_OFFLINE=1 and an empty hub cache: a clear one-line error, no traceback."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "MINDGAP_CACHE": str(tmp_path),
    }
    code = (
        "from core.errors import UserError\n"
        "from trainer.models import resolve_model\n"
        "try:\n"
        "    resolve_model('mindgap-test-org/no-such-model')\n"
        "except UserError as e:\n"
        "    print('USERERROR', e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("USERERROR"), proc.stdout + proc.stderr[-2000:]
    assert "mindgap-test-org/no-such-model" in proc.stdout
    assert "offline" in proc.stdout.lower()
