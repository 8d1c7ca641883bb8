"""What a result needs to be re-run: versions, device, commit, date, command."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ["robustbench-leak", "torch", "torchvision", "timm", "adversarial-robustness-toolbox", "numpy",
            "scipy", "pandas", "pydantic", "seaborn"]


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({cpu}, {torch.get_num_threads()} threads)"


def git_commit(path: Path) -> str:
    """``HEAD`` (+dirty); or ``RBLEAK_SOURCE_COMMIT`` when set: a copy of the tree sent to another machine
    may carry stale git metadata, so whoever sent it names what it was (scripts/gpu-converged.sh)."""
    given = os.environ.get("RBLEAK_SOURCE_COMMIT", "").strip()
    if given:
        return given[:200]
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance(device: torch.device) -> dict[str, Any]:
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["rbleak", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("rbleak")
        else " ".join(sys.argv),
        "device": device_description(device),
        "platform": platform.platform(),
        "versions": package_versions(),
        "git_commit": git_commit(Path(__file__).resolve().parent.parent),
    }
