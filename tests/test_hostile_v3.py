"""Held-out hostile-input classes, v3: names that suggest the closest allowed one, untrained models refused
unless asked for, merges of another config's shard, Ray addresses checked and bounded in time, integer
flags, and expected errors that leave no crash log. Each fails in one line, before any work."""

from __future__ import annotations

import re
import socket
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from robustbench_leak.cli import main
from robustbench_leak.config import ConfigError, load_config

GRID = """
name: {name}
device: cpu
seeds: {seeds}
datasets: [{{name: synthetic, n_train: 64, n_test: 32}}]
training: {{lr: 0.05, epochs: {epochs}, batch_size: 32}}
models: [{{name: {model}, arch: tomen_cnn, options: {{n_layers: 2, width: 4, kernel_size: 3, window: none}}}}]
attacks: [clean]
"""


def _config(tmp_path: Path, file: str = "a.yaml", name: str = "a", seeds: str = "[0]", epochs: int = 1,
            model: str = "m1", extra: str = "") -> Path:
    path = tmp_path / file
    path.write_text(GRID.format(name=name, seeds=seeds, epochs=epochs, model=model) + extra)
    return path


def _one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("rbleak: error: "), err
    return lines[0]


def _argparse_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    return err.strip().splitlines()[-1]


# 1. unknown names and keys suggest the closest allowed one ---------------------------------------------
@pytest.mark.parametrize("old, new, suggestion", [
    ("models:", "modles:", "did you mean 'models'?"),
    ("epochs: 1", "epocs: 1", "did you mean 'epochs'?"),
    ("arch: tomen_cnn", "arch: tomen_cn", "did you mean 'tomen_cnn'?"),
    ("window: none", "window: hamminng", "did you mean 'hamming'?"),
    ("name: synthetic", "name: synthetc", "did you mean 'synthetic'?"),
    ("attacks: [clean]", "attacks: [cleen]", "did you mean 'clean'?"),
    ("attacks: [clean]", "attacks: [{preset: deepfool, params: {max_iters: 5}}]", "did you mean 'max_iter'?"),
    ("kernel_size: 3", "kernel_sise: 3", "did you mean 'kernel_size'?"),
    ("n_train: 64", "n_trian: 64", "did you mean 'n_train'?"),
])
def test_unknown_names_suggest_the_closest(tmp_path, old, new, suggestion):
    text = _config(tmp_path).read_text()
    assert old in text
    (tmp_path / "a.yaml").write_text(text.replace(old, new))
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "a.yaml")
    assert suggestion in str(exc.value).splitlines()[0]


def test_no_suggestion_when_nothing_is_close(tmp_path):
    (tmp_path / "a.yaml").write_text(_config(tmp_path).read_text().replace("arch: tomen_cnn", "arch: zzzzzz"))
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "a.yaml")
    assert "did you mean" not in str(exc.value) and "known models" in str(exc.value)


def test_claim_set_name_suggests(capsys):
    assert "did you mean 'paper'?" in _argparse_error(capsys, ["claims", "results/quickstart", "--claims", "papr"])


# 2. training.epochs 0: refused unless loading weights or allowed explicitly, and then labelled ------------
def test_zero_epochs_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"training\.epochs: 0 trains nothing, so 'm1' would be attacked with its "
                                          r"random initial weights.*allow_untrained: true"):
        load_config(_config(tmp_path, epochs=0))


def test_zero_epochs_allowed_explicitly_is_labelled_untrained(tmp_path):
    cfg = _config(tmp_path, epochs=0, extra="allow_untrained: true\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    board = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert board.arch.tolist() == ["tomen_cnn (untrained)"]
    assert "(untrained)" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_zero_epochs_with_a_checkpoint_is_accepted(tmp_path):
    import torch

    from robustbench_leak.models import create_model

    torch.save(create_model("tomen_cnn", 10, 1, n_layers=2, width=4, kernel_size=3).state_dict(), tmp_path / "w.pt")
    text = _config(tmp_path, epochs=0).read_text().replace("window: none}", "window: none}, checkpoint: w.pt")
    (tmp_path / "a.yaml").write_text(text)
    assert load_config(tmp_path / "a.yaml").run.models[0].checkpoint.endswith("w.pt")


# 3. --merge: only the cells this config plans; expected errors write no crash log -----------------------
def test_merge_of_another_configs_shard_is_refused(tmp_path, capsys):
    other = _config(tmp_path, "b.yaml", name="b", model="m9")
    assert main(["run", str(other), "--out", str(tmp_path / "shard-b"), "--quiet"]) == 0
    mine = _config(tmp_path, seeds="[0, 1]")
    err = _one_line_error(capsys, ["run", str(mine), "--merge", str(tmp_path / "shard-b"),
                                   "--out", str(tmp_path / "merged")])
    assert "shard-b" in err and "another config" in err and "'m9'" in err
    assert not (tmp_path / "merged" / "results.sqlite").exists()  # refused before any work
    # a shard of this config merges
    assert main(["run", str(mine), "--seeds", "1", "--out", str(tmp_path / "s1"), "--quiet"]) == 0
    assert main(["run", str(mine), "--merge", str(tmp_path / "s1"), "--out", str(tmp_path / "merged"),
                 "--quiet"]) == 0
    assert set(pd.read_csv(tmp_path / "merged" / "leaderboard.csv").model) == {"m1"}


def test_expected_errors_write_no_crash_log(tmp_path, capsys, monkeypatch):
    logs = tmp_path / "logs"
    logs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(logs))
    err = _one_line_error(capsys, ["run", str(_config(tmp_path)), "--merge", str(tmp_path / "nosuch-shard"),
                                   "--out", str(tmp_path / "out")])
    assert "nosuch-shard" in err and "traceback" not in err
    _one_line_error(capsys, ["leaderboard", str(tmp_path / "nowhere")])
    assert list(logs.iterdir()) == []


# 4. --executor ray --address: checked before any work, and bounded in time -------------------------------
@pytest.mark.parametrize("address", ["999.1.1.1:1", "host-without-port", "h:0", "h:70000", "a b:1", "ray://"])
def test_invalid_ray_address_refused_before_any_work(tmp_path, capsys, address):
    err = _argparse_error(capsys, ["run", str(_config(tmp_path)), "--executor", "ray", "--address", address,
                                   "--out", str(tmp_path / "out")])
    assert "--address" in err and "HOST:PORT" in err or "port" in err
    assert not (tmp_path / "out").exists()


def test_invalid_address_in_a_config_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"a\.yaml: address: .*999\.1\.1\.1"):
        load_config(_config(tmp_path, extra="executor: ray\naddress: 999.1.1.1:1\n"))


def test_unreachable_cluster_fails_within_the_connect_timeout(tmp_path, capsys):
    pytest.importorskip("ray")
    server = socket.socket()  # accepts connections and never answers: not a Ray cluster
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.extend(server.accept()[0] for _ in range(8)), daemon=True).start()
    port = server.getsockname()[1]
    t0 = time.monotonic()
    try:
        err = _one_line_error(capsys, ["run", str(_config(tmp_path)), "--executor", "ray", "--address",
                                       f"127.0.0.1:{port}", "--connect-timeout", "2", "--out", str(tmp_path / "out")])
    finally:
        server.close()
    assert f"127.0.0.1:{port}" in err and "within 2 s" in err
    assert time.monotonic() - t0 < 60  # 2 s for the cluster, plus importing Ray in the probe
    assert not (tmp_path / "out" / "results.sqlite").exists()  # no run record
    closed = socket.socket()  # nothing listens: refused at once
    closed.bind(("127.0.0.1", 0))
    refused = closed.getsockname()[1]
    closed.close()
    err = _one_line_error(capsys, ["run", str(_config(tmp_path)), "--executor", "ray", "--address",
                                   f"127.0.0.1:{refused}", "--out", str(tmp_path / "out")])
    assert "refused" in err.lower()


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1e9"])
def test_connect_timeout_is_checked(tmp_path, capsys, value):
    err = _argparse_error(capsys, ["run", str(_config(tmp_path)), "--connect-timeout", value])
    assert "--connect-timeout must be a number of seconds" in err


# 5. integer flags of rbleak bench and list: a range, checked before any work ------------------------------
@pytest.mark.parametrize("flag, value", [
    ("--n-images", "0"), ("--n-images", "-3"), ("--n-images", "99999999999999999999"), ("--n-images", "1.5"),
    ("--n-spatial", "0"), ("--n-train", "0"), ("--workers", "0"), ("--workers", "x"),
])
def test_bench_integer_flags(capsys, flag, value):
    err = _argparse_error(capsys, ["bench", flag, value])
    assert f"{flag} must be an integer from" in err


def test_list_num_classes_is_checked(capsys):
    assert "--num-classes must be an integer from 1" in _argparse_error(capsys, ["list", "models", "--num-classes",
                                                                                  "0"])


def test_leaderboard_names_the_bad_input_not_its_folder(tmp_path, capsys):
    """A RESULTS that is no store is reported as such, before the output folder is looked at."""
    not_a_store = tmp_path / "notes.txt"
    not_a_store.write_text("hello\n")
    err = _one_line_error(capsys, ["leaderboard", str(not_a_store)])
    assert "notes.txt" in err and "not an rbleak results store" in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("a,b\n")
    err = _one_line_error(capsys, ["leaderboard", str(foreign)])
    assert "no results store here" in err and "did not write" not in err
    assert not_a_store.read_text() == "hello\n" and sorted(p.name for p in foreign.iterdir()) == ["data.csv"]


@pytest.mark.parametrize("device, ok", [("auto", True), ("cpu", True), ("cuda", True), ("cuda:0", True),
                                        ("cuda:12", True), ("cuda:", False), ("cuda:0x", False), ("cuda:-1", False),
                                        ("cuda:\u0663", False), ("tpu", False), ("CPU", False), ("", False)])
def test_device_names_a_config_may_use(tmp_path, device, ok):
    """cuda:N is allowed as documented (whether CUDA is there is checked next, still before any work)."""
    import torch
    import torch.nn as nn

    import robustbench_leak as rb

    path = tmp_path / "d.yaml"
    path.write_text(GRID.format(name="d", seeds="[0]", epochs=1, model="m1").replace("device: cpu",
                                                                                   f"device: '{device}'"))
    if ok:
        if device in ("auto", "cpu") or torch.cuda.is_available():
            assert load_config(path).run.device == device
        else:
            with pytest.raises(ConfigError, match="CUDA is not available"):
                load_config(path)
        return
    with pytest.raises(ConfigError, match="device: .*must be auto, cpu, cuda or cuda:N"):
        load_config(path)
    with pytest.raises(ValueError, match=r"evaluate: device: .*must be auto, cpu, cuda or cuda:N"):
        rb.evaluate(nn.Linear(2, 2), dataset="synthetic", device=device)


def test_a_truncated_store_is_refused_not_read_partially(tmp_path, capsys):
    """A store cut at a page boundary (an interrupted copy) would read as fewer rows; it fails in one line."""
    from robustbench_leak.store.schema import StoreError, check_store_file

    assert main(["run", str(_config(tmp_path, seeds="[0, 1]")), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    capsys.readouterr()
    data = (tmp_path / "run" / "results.sqlite").read_bytes()
    page = int.from_bytes(data[16:18], "big")
    assert len(data) >= 4 * page
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "results.sqlite").write_bytes(data[:len(data) - page])
    with pytest.raises(StoreError, match=r"truncated \([\d,]+ bytes where its header says [\d,]+\)"):
        check_store_file(cut / "results.sqlite")
    err = _one_line_error(capsys, ["leaderboard", str(cut), "--out", str(tmp_path / "lb")])
    assert "truncated" in err and not (tmp_path / "lb").exists()
    check_store_file(tmp_path / "run" / "results.sqlite")  # the whole file passes


def test_a_model_too_large_for_this_machine_fails_before_any_training(tmp_path, capsys):
    """Width 65536 passes the option's range but needs terabytes: one line at config load, not an allocation
    error in the cell after the other models trained."""
    path = _config(tmp_path, extra="")
    text = path.read_text().replace("models: [", "models: [{name: huge, arch: tomen_cnn, options: {n_layers: 4, "
                                    "width: 65536, kernel_size: 3, window: none}}, ")
    path.write_text(text)
    err = _one_line_error(capsys, ["run", str(path), "--out", str(tmp_path / "out")])
    assert re.search(r"models\[0\]\.options: 'huge' has [\d,]+ parameters: [\d,.]+ GB of float32 weights, gradients "
                     r"and optimizer state, more than this machine's [\d,.]+ GB of memory", err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("label, ok", [("df-0.1 (eps=2/255)", False), ("df|x", False), ("<b>df</b>", False),
                                       ("a&b", False), ("df`", False), ("a\\b", False), ("DeepFool (eps 0.1)", True),
                                       ("spatial_worst", True), ("ε-ball", True), ("=HYPERLINK(1)", False),
                                       ("+1", False), ("-x", False), ("@sum", False), (" m", False), ("m ", False),
                                       ("x=1+2", True)])
def test_labels_without_markup_or_path_separators(tmp_path, label, ok):
    """Labels become Markdown/HTML table headers and file names: | < > & ` / \\ are refused, with the reason."""
    path = _config(tmp_path)
    path.write_text(path.read_text().replace("attacks: [clean]", f"attacks: [{{preset: clean, label: {label!r}}}]"))
    if ok:
        assert load_config(path).attacks[0].label == label
        return
    reasons = "(is one line of text without|may not start|is shown)"
    with pytest.raises(ConfigError, match=rf"attacks\[0\]\.label: .*a name or label {reasons}"):
        load_config(path)


def test_init_into_a_missing_folder_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(capsys, ["init", "nodir/mine"])
    assert "the folder nodir does not exist" in err and not (tmp_path / "nodir").exists()
    assert main(["init", "mine"]) == 0 and (tmp_path / "mine.yaml").read_text().count("name: mine") == 1
    err = _one_line_error(capsys, ["init", "mine"])
    assert "exists" in err


def test_leaderboard_never_replaces_another_run_folders_leaderboard(tmp_path, capsys):
    """--out naming a run folder is its own leaderboard's place only: another run's table or a merge is refused
    before anything is written; an empty --format is refused too."""
    for name in ("a", "b"):
        assert main(["run", str(_config(tmp_path, file=f"{name}.yaml", name=name)), "--out", str(tmp_path / name),
                     "--quiet"]) == 0
    capsys.readouterr()
    before = (tmp_path / "b" / "leaderboard.md").read_bytes()
    err = _one_line_error(capsys, ["leaderboard", str(tmp_path / "a"), "--out", str(tmp_path / "b")])
    assert "another run's" in err
    err = _one_line_error(capsys, ["leaderboard", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "b")])
    assert "a merge's" in err
    assert (tmp_path / "b" / "leaderboard.md").read_bytes() == before
    err = _one_line_error(capsys, ["leaderboard", str(tmp_path / "a"), "--format", " , "])
    assert "names no format" in err
    assert main(["leaderboard", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "merged"),
                 "--format", "md"]) == 0
    assert main(["leaderboard", str(tmp_path / "b"), "--out", str(tmp_path / "b"), "--format", "md"]) == 0
    err = _one_line_error(capsys, ["claims", str(tmp_path / "a"), "--out", str(tmp_path / "b" / "REPORT.md")])
    assert "in another run's folder" in err and not (tmp_path / "b" / "REPORT.md").exists()


def test_a_checkpoint_cache_that_is_a_file_fails_before_the_run_starts(tmp_path, capsys, monkeypatch):
    """RBLEAK_CACHE_DIR naming a file (or a path under one) failed every training cell after the run was
    recorded; it is now refused in one line naming the variable, with nothing written."""
    (tmp_path / "afile").write_text("")
    for value in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        monkeypatch.setenv("RBLEAK_CACHE_DIR", str(value))
        err = _one_line_error(capsys, ["run", str(_config(tmp_path)), "--out", str(tmp_path / "run"), "--quiet"])
        assert err.startswith(f"rbleak: error: RBLEAK_CACHE_DIR: {value}: ") and "is a file" in err
        assert not (tmp_path / "run").exists()
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["run", str(_config(tmp_path)), "--out", str(tmp_path / "run"), "--quiet"]) == 0


def test_paths_the_system_refuses_are_one_line_errors_that_cut_the_path(tmp_path, capsys):
    long = str(tmp_path / ("y" * 300))  # one component past the file system's 255 bytes
    config = str(_config(tmp_path))
    for argv in (["run", config, "--out", long], ["leaderboard", long], ["claims", long]):
        err = _one_line_error(capsys, argv)
        assert "File name too long" in err and "characters)" in err and len(err) < 400, (argv, err)
        assert "Errno" not in err and "internal error" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml"]


@pytest.mark.skipif(not Path("/dev/zero").exists() or not hasattr(__import__("os"), "mkfifo"), reason="POSIX only")
def test_devices_and_fifos_are_refused_not_read_forever(tmp_path, capsys):
    """A config, claim set or preamble that is /dev/zero or a FIFO was read until memory ran out (or forever)."""
    import os

    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        err = _one_line_error(capsys, ["run", path, "--out", str(tmp_path / "run")])
        assert f"{path}: not a regular file" in err
        err = _one_line_error(capsys, ["claims", str(tmp_path), "--preamble", path, "--out", str(tmp_path / "R.md")])
        assert f"{path}: --preamble: not a regular file" in err
    from robustbench_leak.config.yaml_io import read_text_bounded

    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ConfigError, match=r"big.yaml: more than 1,048,576 bytes"):
        read_text_bounded(big, "run config")
    assert not (tmp_path / "run").exists() and not (tmp_path / "R.md").exists()


def test_dollar_signs_in_names_and_descriptions_are_drawn_as_written(tmp_path, capsys, monkeypatch):
    """matplotlib parsed "$x^$" in a model name or a config's description as mathtext, and the figures (and
    so the run's leaderboard) failed with "x^; ^"."""
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache"))
    config = _config(tmp_path, model="m$x^$", extra='description: "costs $\\\\frac{$ and $x^$"\n')
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0, capsys.readouterr().err
    svgs = list((tmp_path / "run" / "plots").glob("*.svg"))
    titled = [p for p in svgs if p.stem != "windows"]  # the windows figure is the package's, without a protocol
    assert titled and all("costs $\\frac{$ and $x^$" in p.read_text() for p in titled)
    assert any("m$x^$" in p.read_text() for p in svgs)
