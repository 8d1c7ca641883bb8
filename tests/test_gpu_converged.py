"""scripts/gpu-converged.sh's CPU form: the GPU run's stages (seed shards with --time-limit, the merge, the
compressed files and the summary that names the commit) on a tiny config, so the GPU form cannot rot."""

import json
import os
import sqlite3
import subprocess
import sys
import tarfile

from conftest import REPO

SCRIPT = str(REPO / "scripts" / "gpu-converged.sh")


def _run(tmp_path, *args, timeout=600):
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    return subprocess.run(["bash", SCRIPT, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_cpu_form_runs_seed_shards_merges_and_brings_back_the_store(tmp_path):
    out = tmp_path / "out"
    proc = _run(tmp_path, "c0ffee", "ab" * 32, "--cpu", "--no-bench", "--out", str(out), "--time-limit", "300")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "gpu-converged.json").read_text())
    assert summary["seeds_done"] == [0, 1] and summary["seeds_partial"] == []
    assert [s["stage"] for s in summary["stages"]] == ["seed-0", "seed-1", "merge"]
    assert all(s["exit_status"] == 0 and s["seconds"] > 0 for s in summary["stages"])
    assert summary["recorded_as"] == "c0ffee+diff." + "ab" * 8
    assert set(summary["cell_seconds"]["attack"]) == {"clean", "deepfool", "spatial"}
    assert sorted(summary["files"]) == ["run.tar.xz", "shards.tar.xz"]
    with tarfile.open(out / "run.tar.xz") as tar:
        tar.extractall(tmp_path / "back", filter="data")
    con = sqlite3.connect(tmp_path / "back" / "run" / "results.sqlite")
    try:
        seeds = {r[0] for r in con.execute("SELECT DISTINCT rc.seed FROM run_cells rc JOIN cells c "
                                           "ON c.cell_key = rc.cell_key AND c.status = 'done'")}
        commits = {r[0] for r in con.execute("SELECT git_commit FROM runs")}
    finally:
        con.close()
    assert seeds == {0, 1} and commits == {"c0ffee+diff." + "ab" * 8}  # what ran, not the copy's git metadata


def test_time_limit_too_short_for_a_shard_exits_75_with_a_summary(tmp_path):
    out = tmp_path / "out"
    proc = _run(tmp_path, "c0ffee", "clean", "--cpu", "--no-bench", "--out", str(out), "--time-limit", "1",
                timeout=120)
    assert proc.returncode == 75, proc.stderr[-2000:]
    summary = json.loads((out / "gpu-converged.json").read_text())
    assert summary["seeds_done"] == [] and summary["stages"] == [] and summary["recorded_as"] == "c0ffee"


def test_bad_arguments_fail_in_one_line(tmp_path):
    proc = _run(tmp_path, "c0ffee", "clean", "--time-limit", "soon", timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "gpu-converged.sh: --time-limit: expected a whole number of seconds > 0"
    proc = _run(tmp_path, "--cpu", timeout=30)
    assert proc.returncode == 2 and "gpu-converged.sh COMMIT DIFF_SHA" in proc.stderr


def test_results_detach_from_the_index_and_attach_back(tmp_path):
    """--detach-results keeps the published runs out of what the GPU call sends (git's index and exclude
    file, the files untouched); --attach-results restores the index exactly; staged work is never touched."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "results" / "run").mkdir(parents=True)
    (repo / "scripts" / "gpu-converged.sh").write_text((REPO / "scripts" / "gpu-converged.sh").read_text())
    (repo / "results" / "run" / "results.sqlite").write_bytes(b"store")
    (repo / "README.md").write_text("x\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run([*git, *args], check=True)
    script = str(repo / "scripts" / "gpu-converged.sh")

    def sent() -> set[str]:
        out = subprocess.run([*git, "ls-files", "-co", "--exclude-standard"], capture_output=True, text=True).stdout
        return set(out.split())

    (repo / "README.md").write_text("staged\n")
    subprocess.run([*git, "add", "README.md"], check=True)
    refused = subprocess.run(["bash", script, "--detach-results"], capture_output=True, text=True)
    assert refused.returncode == 2 and "staged" in refused.stderr
    subprocess.run([*git, "reset", "-q", "--hard"], check=True)
    assert subprocess.run(["bash", script, "--detach-results"], capture_output=True).returncode == 0
    assert not any(n.startswith("results/") for n in sent()) and (repo / "results" / "run" / "results.sqlite").exists()
    assert subprocess.run(["bash", script, "--detach-results"], capture_output=True).returncode == 2  # once only
    assert subprocess.run(["bash", script, "--attach-results"], capture_output=True).returncode == 0
    assert "results/run/results.sqlite" in sent()
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout
    assert status == ""
