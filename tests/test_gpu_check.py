"""scripts/gpu-check.sh's reduced CPU form runs end to end and writes its JSON (so the GPU form cannot rot)."""

import json
import os
import subprocess
import sys

from conftest import REPO


def test_gpu_check_cpu_form_writes_its_json(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "RBLEAK_CACHE_DIR": str(tmp_path / "unused")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu-check.sh"), "--cpu", "--out", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "gpu-check-cpu.json").read_text())
    assert result["mode"] == "cpu" and result["provenance"]["device"]
    assert result["quickstart"]["seconds"] > 0 and result["quickstart"]["leaderboard_rows"] >= 2
    bench = result["bench"]
    assert bench["device"] == "cpu" and bench["deepfool"]["native_vs_art"] > 0
    assert result["agreement"]["native_fooled_agreement"] >= 0.99
    assert result["training_throughput"]["harness_vs_plain"] > 0
    assert [r["model"] for r in result["paper_scale_epoch"]] == ["cnn-3x3", "cnn-7x7-hamming"]
    assert all(r["full_epoch_seconds_estimate"] > 0 and r["batch_size"] == 32 for r in result["paper_scale_epoch"])
    bad = subprocess.run(["bash", str(REPO / "scripts" / "gpu-check.sh"), "--bogus"], env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "gpu-check.sh: --bogus: unknown argument; allowed: --cpu, --out DIR"
