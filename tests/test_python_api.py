"""The Python API: ``rb.evaluate`` on any nn.Module gives the numbers a config run gives for the same
weights, ``rb.load_results`` returns the documented columns, and the README's Python example runs."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch
import torch.nn as nn
from conftest import REPO

import robustbench_leak as rb
from robustbench_leak.config import load_config
from robustbench_leak.pipeline import run_config
from robustbench_leak.run.executor import LocalExecutor

DATA = {"name": "synthetic", "n_train": 32, "n_test": 64}
ATTACKS = ["clean", "deepfool"]
KEY = ["attack", "metric"]


class Tiny(nn.Module):
    """A model that is not in the registry."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 5, padding=2)
        self.head = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def test_evaluate_equals_a_config_run_of_the_same_weights(tmp_path):
    from robustbench_leak.models import create_model
    from robustbench_leak.report.leaderboard import write_outputs

    torch.manual_seed(3)
    options = {"n_layers": 2, "width": 4, "kernel_size": 3, "window": "hamming"}
    net = create_model("tomen_cnn", 10, 1, **options)
    api = rb.evaluate(net, dataset=DATA, attacks=ATTACKS, n_samples=24, device="cpu", out=tmp_path / "api",
                      name="mine")
    torch.save(net.state_dict(), tmp_path / "w.pt")
    (tmp_path / "c.yaml").write_text(f"""
name: same
device: cpu
datasets: [{{name: synthetic, n_train: 32, n_test: 64, normalize: false}}]
models: [{{name: mine, arch: tomen_cnn, options: {options}, checkpoint: w.pt}}]
attacks: [{{preset: clean, n_samples: 24}}, {{preset: deepfool, n_samples: 24}}]
""")
    run_config(load_config(tmp_path / "c.yaml"), tmp_path / "cfg", executor=LocalExecutor(), progress=False,
               formats=("csv",))
    cfg = rb.load_results(tmp_path / "cfg").metrics
    assert set(api.attack) == set(ATTACKS) and len(api) == len(cfg) > 8
    a, c = api.sort_values(KEY).reset_index(drop=True), cfg.sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[KEY + ["value", "lo", "hi"]], c[KEY + ["value", "lo", "hi"]])
    # the same weights into the same folder again: every cell is found in the store, nothing recomputed
    again = rb.evaluate(net, dataset=DATA, attacks=ATTACKS, n_samples=24, device="cpu", out=tmp_path / "api",
                        name="mine")
    pd.testing.assert_frame_equal(again, api)
    assert len(rb.load_results(tmp_path / "api").runs) == 2
    # the kept folder is a run folder: rbleak leaderboard merges it with the config run
    write_outputs([tmp_path / "api", tmp_path / "cfg"], tmp_path / "merged", formats=("csv",))
    board = pd.read_csv(tmp_path / "merged" / "leaderboard.csv")
    assert board.run.tolist().count("api") == 1 and len(board) == 2
    assert board["deepfool.rho_mean"].nunique() == 1


def test_evaluate_a_module_outside_the_registry_counts_right():
    from robustbench_leak.data import load_dataset

    torch.manual_seed(0)
    model = Tiny()
    df = rb.evaluate(model, dataset=DATA, attacks=ATTACKS, n_samples=20, device="cpu")
    assert list(df.columns) == list(rb.COLUMNS["metrics"])
    data = load_dataset("synthetic", n_train=32, n_test=64)
    with torch.no_grad():
        expected = float((model(data.test_x[:20]).argmax(1) == data.test_y[:20]).float().mean())
    got = df[(df.attack == "clean") & (df.metric == "accuracy")].value.item()
    assert got == pytest.approx(expected)
    rho = df[(df.attack == "deepfool") & (df.metric == "rho_mean")]
    assert rho.value.item() > 0 and rho.lo.item() <= rho.value.item() <= rho.hi.item()
    assert (df.model == "Tiny").all() and (df.arch == "user-module").all()


def test_a_windowed_timm_model_goes_through_the_same_call(tmp_path):
    timm = pytest.importorskip("timm")
    from robustbench_leak.nn import windowize

    model = windowize(timm.create_model("resnet10t", num_classes=10, in_chans=1), "hamming", kernel_size=5)
    df = rb.evaluate(model, dataset=DATA, attacks=["clean"], n_samples=8, device="cpu", out=tmp_path / "t", name="r10t")
    assert df.metric.tolist() == ["accuracy", "n"] and df.value.iloc[1] == 8
    models = rb.load_results(tmp_path / "t").models
    assert models.window.tolist() == ["hamming"] and "5x5" in models.kernel.item() and models.params.item() > 10**6


@pytest.mark.parametrize("kwargs, message", [
    ({"attacks": "clean"}, "attacks: 'clean': give a list"),
    ({"n_samples": 0}, "n_samples: 0: expected an integer >= 1"),
    ({"dataset": {"root": "/x"}}, "give a dataset name or a mapping with 'name'"),
])
def test_evaluate_bad_arguments_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        rb.evaluate(Tiny(), **{"dataset": DATA, "device": "cpu", **kwargs})


def test_evaluate_refuses_a_model_with_the_wrong_number_of_logits():
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 3))
    with pytest.raises(ValueError, match=r"returned \((\d+), 3\); expected logits of shape \(\1, 10\)"):
        rb.evaluate(model, dataset=DATA, attacks=["clean"], device="cpu")


def test_evaluate_tensors_equals_the_same_images_as_a_dataset(tmp_path):
    """``dataset=(x, y)``: the images given are the ones attacked, with the results of the same images read from a
    registered dataset; the same tensors into the same folder resume; nothing of them stays registered."""
    from robustbench_leak.data import list_datasets, load_dataset

    torch.manual_seed(1)
    model = Tiny()
    data = load_dataset("synthetic", n_train=32, n_test=64)
    x, y = data.test_x[:24].clone(), data.test_y[:24].clone()
    by_tensors = rb.evaluate(model, dataset=(x, y), attacks=ATTACKS, device="cpu", out=tmp_path / "t")
    by_name = rb.evaluate(model, dataset=DATA, attacks=ATTACKS, n_samples=24, device="cpu")
    assert by_tensors.dataset.nunique() == 1 and by_tensors.dataset.iloc[0].startswith("tensors-")
    a, b = by_tensors.sort_values(KEY).reset_index(drop=True), by_name.sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[KEY + ["value", "lo", "hi"]], b[KEY + ["value", "lo", "hi"]])
    assert a[a.metric == "n"].value.eq(24).all()
    again = rb.evaluate(model, dataset=[x, y], attacks=ATTACKS, device="cpu", out=tmp_path / "t")
    pd.testing.assert_frame_equal(again, by_tensors)
    assert not [e.name for e in list_datasets() if e.name.startswith("tensors-")]


X, Y = torch.rand(8, 1, 28, 28), torch.arange(8) % 10


@pytest.mark.parametrize("dataset, message", [
    ((X, Y), None),
    ((X * 2, Y), "x: values from"),
    ((X[0], Y), "expected float images (N, C, H, W)"),
    ((X[:0], Y[:0]), "expected float images (N, C, H, W), N >= 1"),
    ((X.long(), Y), "expected float images"),
    ((X, Y.float()), "y: a torch.float32 tensor of shape (8,); expected integer labels"),
    ((X, Y[:3]), "expected integer labels of shape (8,)"),
    ((X, Y + 10), "y: label 17, but the model gives 10 logits"),
    ((X, Y - 1), "y: label -1; expected class indices >= 0"),
    ((X, Y, Y), "got a tuple; give a dataset name"),
    (X, "got a Tensor; give a dataset name"),
])
def test_evaluate_bad_tensors_are_one_line_errors_before_any_work(tmp_path, dataset, message):
    from robustbench_leak.data import list_datasets

    if message is None:  # the valid pair, for contrast
        assert len(rb.evaluate(Tiny(), dataset=dataset, attacks=["clean"], device="cpu")) == 2
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        rb.evaluate(Tiny(), dataset=dataset, attacks=["clean"], device="cpu", out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert not [e.name for e in list_datasets() if e.name.startswith("tensors-")]


def test_evaluate_config_errors_name_the_argument_not_a_temporary_file():
    with pytest.raises(ValueError) as exc:
        rb.evaluate(Tiny(), dataset=DATA, attacks=[{"preset": "deepfool", "params": {"max_iter": -1}}], device="cpu")
    assert str(exc.value).startswith("evaluate: attacks[0].params:") and "rbleak-evaluate" not in str(exc.value)


def test_load_results_tables_have_the_documented_columns():
    results = rb.load_results(REPO / "results" / "quickstart")
    for table in ("metrics", "models", "runs"):
        assert list(getattr(results, table).columns) == list(rb.COLUMNS[table])
    assert list(results.samples.columns) == list(rb.COLUMNS["samples"])
    m = results.metrics
    assert set(m.model) == set(results.models.model) == {"cnn-3x3", "cnn-7x7", "cnn-7x7-hamming"}
    board = pd.read_csv(REPO / "results" / "quickstart" / "leaderboard.csv")
    for _, row in board.iterrows():  # the tidy table holds the leaderboard's numbers (one seed: no averaging)
        assert m[(m.model == row.model) & (m.attack == "deepfool") & (m.metric == "rho_mean")].value.item() == \
            pytest.approx(row["deepfool.rho_mean"])
    assert (results.samples.groupby(["model", "attack"]).size() > 0).all()


def test_python_api_page_documents_every_column():
    text = (REPO / "docs" / "python-api.md").read_text()
    for table, columns in rb.COLUMNS.items():
        for column, doc in columns.items():
            assert f"| `{column}` | {doc} |" in text, f"docs/python-api.md: {table}.{column} not documented"


class WritesIntoItsInput(Tiny):
    """Shifts its input in place before the same layers as Tiny (a normalisation written with ``sub_``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.sub_(0.25)
        return super().forward(x)


class ShiftsACopy(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x - 0.25)


def test_a_module_writing_into_its_input_changes_neither_the_callers_images_nor_the_results():
    from robustbench_leak.data import load_dataset

    torch.manual_seed(2)
    writes = WritesIntoItsInput()
    copies = ShiftsACopy()
    copies.load_state_dict(writes.state_dict())
    data = load_dataset("synthetic", n_train=32, n_test=64)
    x, y = data.test_x[:16].clone(), data.test_y[:16].clone()
    before = x.clone()
    a = rb.evaluate(writes, dataset=(x, y), attacks=ATTACKS, device="cpu")
    assert torch.equal(x, before)
    b = rb.evaluate(copies, dataset=(x, y), attacks=ATTACKS, device="cpu")
    pd.testing.assert_frame_equal(a.sort_values(KEY).reset_index(drop=True)[KEY + ["value"]],
                                  b.sort_values(KEY).reset_index(drop=True)[KEY + ["value"]])
    # by dataset name: the process's cached test images, which the output check runs on, stay as they were
    from robustbench_leak.config import DatasetCfg
    from robustbench_leak.data import load_dataset_cached
    from robustbench_leak.run.plan import dataset_spec

    cached = load_dataset_cached(dataset_spec(DatasetCfg(**DATA)))
    before = cached.test_x.clone()
    rb.evaluate(writes, dataset=DATA, attacks=["clean"], n_samples=8, device="cpu")
    assert load_dataset_cached(dataset_spec(DatasetCfg(**DATA))) is cached and torch.equal(cached.test_x, before)


class DoubleLogits(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).double()


class DoubleLogitsCastBack(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).double().float()


def test_float64_logits_are_attacked_as_float32():
    """A module whose head returns float64 failed its DeepFool cell (an index_put of double into float)."""
    torch.manual_seed(3)
    double = DoubleLogits()
    cast = DoubleLogitsCastBack()
    cast.load_state_dict(double.state_dict())
    a = rb.evaluate(double, dataset=DATA, attacks=ATTACKS, n_samples=16, device="cpu")
    b = rb.evaluate(cast, dataset=DATA, attacks=ATTACKS, n_samples=16, device="cpu")
    assert set(a.attack) == {"clean", "deepfool"}
    pd.testing.assert_frame_equal(a.sort_values(KEY).reset_index(drop=True)[KEY + ["value"]],
                                  b.sort_values(KEY).reset_index(drop=True)[KEY + ["value"]])
