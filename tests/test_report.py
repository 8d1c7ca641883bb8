"""Leaderboard outputs from fabricated stores with known values: CI and flags, merging, JSON, LaTeX, HTML, plots."""

import json
import re
import sqlite3

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from report_data import EVIL, Fake, grid_accuracy, make_run, three_models

from robustbench_leak.cli import main
from robustbench_leak.nn import WindowedConv2d, effective_kernel, windowize
from robustbench_leak.report.eps_curves import curve_frame
from robustbench_leak.report.exports import latex_escape
from robustbench_leak.report.kernels import first_conv
from robustbench_leak.report.leaderboard import FORMATS, build_table, to_markdown, write_outputs
from robustbench_leak.report.loader import load_runs
from robustbench_leak.report.plots import pareto_front, spatial_grids


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("fake") / "run", three_models(), seeds=(0, 1))


@pytest.fixture(scope="module")
def outputs(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    written = write_outputs([run_dir], out, formats=FORMATS)
    return out, written


def test_ci_and_flags_in_table_and_markdown(run_dir):
    table, legend, rank_col = build_table([run_dir])
    assert rank_col == "deepfool.rho_mean"  # from the config's rank_by
    assert list(table.model) == ["cnn-7x7-hamming", "cnn-7x7", "cnn-3x3"]
    ham = table.iloc[0]
    # two seeds: mean of the values and the seed-level t-interval over the per-seed values
    from scipy import stats as sps

    def t95(values):
        return sps.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))

    assert ham["clean.accuracy"] == pytest.approx(0.925)
    assert (ham["clean.accuracy.lo"], ham["clean.accuracy.hi"]) == pytest.approx(t95([0.92, 0.93]))
    assert (ham["deepfool.rho_mean.lo"], ham["deepfool.rho_mean.hi"]) == pytest.approx(t95([0.20, 0.21]))
    assert ham["clean.accuracy.interval"] == "seeds"
    assert "several seeds: 95% t-interval" in legend["clean.accuracy"]
    assert ham["deepfool.rho_mean.std"] == pytest.approx(np.std([0.20, 0.21], ddof=1))
    assert ham["deepfool.flags"].startswith("gradient masking suspected")
    assert table["deepfool.flags"].isna().sum() == 2
    assert "spatial.rho_mean.lo" not in table.columns and "spatial.robust_accuracy.lo" not in table.columns
    assert "[lo, hi]" in legend and "⚠" in legend and "DeepFool" not in legend["spatial.robust_accuracy"]

    md = to_markdown(table, legend, rank_col, "T")
    lo, hi = t95([0.92, 0.93])
    assert f"92.5% ± 0.7 [{100 * lo:.1f}, {100 * hi:.1f}]" in md
    lo, hi = t95([0.20, 0.21])
    assert f"0.2050 ± 0.0071 [{lo:.4f}, {hi:.4f}] ⚠[1]" in md
    assert "1. deepfool, cnn-7x7-hamming (run): gradient masking suspected" in md
    assert md.count("⚠[") == 4  # every DeepFool metric of the flagged row, none elsewhere


def test_csv_has_interval_columns(outputs):
    out, written = outputs
    csv = pd.read_csv(out / "leaderboard.csv")
    wanted = {"run", "clean.accuracy.lo", "clean.accuracy.hi", "deepfool.rho_mean.lo", "deepfool.flags"}
    assert wanted <= set(csv.columns)
    row = csv[csv.model == "cnn-3x3"].iloc[0]
    from scipy import stats as sps

    lo = sps.t.interval(0.95, 1, loc=0.905, scale=sps.sem([0.90, 0.91]))[0]  # two seeds: seed-level t-interval
    assert row["clean.accuracy.lo"] == pytest.approx(lo) and row["clean.accuracy.interval"] == "seeds"
    assert row["run"] == "run"
    names = {p.name for p in written}
    assert {"leaderboard.csv", "leaderboard.md", "leaderboard.json", "leaderboard.tex", "leaderboard.html"} <= names


def test_merge_keeps_rows_of_each_run_apart(tmp_path):
    a = make_run(tmp_path / "a" / "run", [Fake("same", 3, "none", 0.9, 0.1, 0.5)], run_id="r-a")
    b = make_run(tmp_path / "b" / "run", [Fake("same", 7, "hamming", 0.8, 0.3, 0.4),
                                          Fake("other", 3, "none", 0.7, 0.2, 0.3)], run_id="r-b")
    table, _, _ = build_table([a, b])
    # same model name and dataset in two runs: two rows, told apart by the run folder (names clash too)
    assert len(table) == 3
    assert list(zip(table.model, table.run)) == [("same", "b/run"), ("other", "b/run"), ("same", "a/run")]
    assert list(table["rank"]) == [1, 2, 3]
    assert table.set_index("run").loc["a/run", "deepfool.rho_mean"] == pytest.approx(0.1)
    md = to_markdown(table, *build_table([a, b])[1:], "merged")
    assert "| same | a/run |" in md and "| same | b/run |" in md
    with pytest.raises(ValueError, match="given twice"):
        build_table([a, a / "results.sqlite"])

    # the CLI (a folder or its store file): merging needs --out; the browser test renders a merged page
    assert main(["leaderboard", str(a), str(b)]) == 2
    out = tmp_path / "merged"
    assert main(["leaderboard", str(a), str(b / "results.sqlite"), "--out", str(out), "--format", "json,csv"]) == 0
    merged = json.loads((out / "leaderboard.json").read_text())
    assert [(r["name"], r["run"]) for r in merged["records"]] == list(zip(table.model, table.run))
    assert pd.read_csv(out / "leaderboard.csv").run.tolist() == ["b/run", "b/run", "a/run"]
    assert not (out / "leaderboard.md").exists() and not (out / "plots").exists()
    assert main(["leaderboard", str(a), "--out", str(tmp_path / "x"), "--format", "csv,pdf"]) == 2


def test_json_records_like_robustbench(outputs):
    out, _ = outputs
    doc = json.loads((out / "leaderboard.json").read_text())
    assert doc["rank_by"] == "deepfool.rho_mean" and "deepfool.rho_mean" in doc["legend"]
    assert len(doc["records"]) == 3
    rec = doc["records"][0]
    assert rec["name"] == "cnn-7x7-hamming" and rec["architecture"] == "tomen_cnn" and rec["dataset"] == "synthetic"
    assert rec["kernel"] == "7x7" and rec["window"] == "hamming" and rec["params"] > 0 and rec["flops"] == 49000
    assert rec["options"]["window"] == "hamming" and rec["seeds"] == [0, 1]
    rho = rec["metrics"]["deepfool.rho_mean"]
    assert rho["value"] == pytest.approx(0.205)
    from scipy import stats as sps

    assert (rho["lo"], rho["hi"]) == pytest.approx(sps.t.interval(0.95, 1, loc=0.205, scale=sps.sem([0.20, 0.21])))
    assert rho["interval"]["covers"] == "seeds" and "t-interval" in rho["interval"]["method"]
    assert rho["per_seed"] == {"0": pytest.approx(0.20), "1": pytest.approx(0.21)}
    assert rho["flags"] == ["gradient masking suspected: 2 of 4 images unchanged after 5 iterations"]
    assert rec["metrics"]["spatial.transform"]["value"] == "(-2, +2) px +30°; (-2, +2) px +30°"
    deepfool = rec["attacks"]["deepfool"]
    assert deepfool["params"]["max_iter"] == 5 and "DeepFool" in deepfool["description"]
    prov = rec["provenance"]
    assert prov["config"]["seeds"] == [0, 1] and prov["config_hash"] == "feedc0de"
    assert prov["git_commit"] == "0123456789abcdef" and prov["versions"]["adversarial-robustness-toolbox"] == "1.20.1"
    assert prov["device"].startswith("cpu") and prov["date"] and prov["status"] == "done"
    assert prov["cells_computed_in"][0]["run_id"] == "20260101T000000-aaaaaa"
    assert len(rec["models"]) == 2 and rec["models"][0]["checkpoint"].endswith(".pt")


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory):
    """A name and a flag full of markup; spatial cells without a grid, as the ART engine stores them."""
    return make_run(tmp_path_factory.mktemp("evil") / "run",
                    [Fake(EVIL, 3, "none", 0.5, 0.1, 0.2, flags=("masking & 100% <b>bad</b>",), grid=False),
                     Fake("plain", 7, "hamming", 0.6, 0.2, 0.3, grid=False)])


def test_latex_is_booktabs_and_escaped(evil_run, tmp_path):
    write_outputs([evil_run], tmp_path, formats=("latex", "md"))
    tex = (tmp_path / "leaderboard.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "\\begin{tabular}" in tex
    body = tex[tex.index("\\begin{table}"):]
    assert latex_escape(EVIL) in body and EVIL not in body
    assert ("cnn \\textless{}script\\textgreater{}alert(\"x\")\\textless{}/script\\textgreater{} "
            "\\& 50\\%\\_\\{x\\}") in body
    assert "masking \\& 100\\% \\textless{}b\\textgreater{}bad" in body and "\\dag1" in body
    assert "50.0 [45.0, 55.0]" in body  # clean accuracy with its interval, the header carries the %
    md = (tmp_path / "leaderboard.md").read_text()
    assert "⚠[1]" in md and "<script>" not in md and "<b>bad" not in md  # Markdown renders raw HTML: escaped
    assert "cnn &lt;script&gt;alert(\"x\")&lt;/script&gt; &amp; 50%_{x}" in md
    assert "masking &amp; 100% &lt;b&gt;bad&lt;/b&gt;" in md


def test_html_escapes_everything_and_is_self_contained(evil_run, tmp_path):
    stale = tmp_path / "plots" / "spatial_heatmap.png"  # left by an earlier render whose cells had a grid
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    write_outputs([evil_run], tmp_path, formats=("html",))
    html = (tmp_path / "leaderboard.html").read_text()
    assert "<script>alert" not in html and "<b>bad</b>" not in html
    assert "cnn &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; 50%_{x}" in html
    assert 'title="masking &amp; 100% &lt;b&gt;bad&lt;/b&gt;"' in html and "<li>deepfool, cnn &lt;script&gt;" in html
    assert len(re.findall(r"<script\b", html)) == 1  # ours, inline
    # nothing is fetched: no external src/href, images are data URIs, CSP forbids the rest
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert html.count('src="data:image/png;base64,') == 5
    assert "default-src 'none'" in html
    # every figure links its files next to the page; every metric column has a definition
    assert 'href="plots/windows.svg"' in html and 'href="plots/accuracy_vs_robustness.png"' in html
    assert 'data-col="deepfool.rho_mean" data-attack="deepfool" title="mean of ||x_adv' in html
    assert "<dt>[lo, hi]</dt>" in html and "0123456789abcdef" in html
    # no grid stored: no heatmap (the stale file is gone), a note says why, the chosen transform stays
    assert not stale.exists() and not (tmp_path / "plots" / "spatial_heatmap.svg").exists()
    assert "the ART engine reports only the one global transform it chose" in html
    assert "(-2, +2) px +30°" in html


def test_plots_png_and_svg(outputs, run_dir):
    out, written = outputs
    plots = out / "plots"
    for name in ("accuracy_vs_robustness", "robustness_curves", "spatial_heatmap", "training_curves",
                 "first_layer_kernels", "windows"):
        png, svg = plots / f"{name}.png", plots / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text(), name
        assert png in written and svg in written
    # the checkpoint of cnn-7x7 is gone: its kernels are skipped with a note on the page, not an error
    html = (out / "leaderboard.html").read_text()
    assert "cnn-7x7: checkpoint" in html and "is gone; its kernels are not shown" in html


def test_spatial_grid_and_robustness_curves_data(run_dir):
    runs = load_runs([run_dir])
    table, _, _ = build_table([run_dir])
    grids = {title: pivot for _, title, pivot in spatial_grids(runs, table)}
    assert set(grids) == {"cnn-3x3", "cnn-7x7", "cnn-7x7-hamming"}
    pivot = grids["cnn-3x3"]
    assert list(pivot.columns) == [-30.0, 0.0, 30.0] and pivot.shape == (9, 3)
    assert list(pivot.index[:2]) == ["(-2, -2)", "(-2, +0)"]
    mean_over_seeds = (grid_accuracy(-2, 0, 30.0, 0) + grid_accuracy(-2, 0, 30.0, 1)) / 2
    assert pivot.loc["(-2, +0)", 30.0] == pytest.approx(mean_over_seeds)

    curves = curve_frame(runs, table, "deepfool")
    c = curves[(curves.model == "cnn-3x3") & (curves.seed == 0)].set_index("budget").accuracy
    # all 4 images clean-correct, flipped at L2 0.2, 0.4, 0.6, 0.8: accuracy is the fraction needing more
    assert c.iloc[0] == 1.0 and c.is_monotonic_decreasing
    for eps, expected in [(0.3, 0.75), (0.5, 0.5), (0.7, 0.25)]:
        assert c[c.index <= eps].iloc[-1] == expected
    top = curves.budget.max()
    assert top == pytest.approx(np.quantile([0.2, 0.4, 0.6, 0.8] * 2 + [0.5, 1.0, 1.5, 2.0] * 4, 0.98) * 1.1)


def test_pareto_front():
    x = np.array([0.9, 0.8, 0.92, 0.92, 0.5])
    y = np.array([0.1, 0.3, 0.2, 0.2, 0.3])
    # (0.9, 0.1) is beaten by (0.92, 0.2); (0.5, 0.3) by (0.8, 0.3); the two equal points both stay
    assert pareto_front(x, y).tolist() == [False, True, True, True, False]


class _OwnConv(nn.Conv2d):  # a conv subclass, windowed through a parametrization (as timm's StdConv2d)
    pass


def test_first_conv_is_the_effective_kernel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Identity(), WindowedConv2d(1, 4, 7, window="hamming"), nn.Conv2d(4, 4, 3))
    name, kernel = first_conv({"mean": torch.zeros(1, 1, 1, 1), **model.state_dict()})
    assert name == "1" and np.allclose(kernel, effective_kernel(model[1]).double().numpy())
    assert np.abs(kernel[..., 0, 0]).max() < 0.1 * np.abs(kernel).max()  # corners damped by 0.0064

    own = nn.Sequential(nn.Conv2d(3, 2, 1), _OwnConv(3, 2, 5))
    windowize(own, "hann")
    name, kernel = first_conv(own.state_dict())
    assert name == "1" and np.allclose(kernel, own[1].weight.detach().double().numpy())
    assert np.all(kernel[..., 0, :] == 0)  # Hann's end taps are exactly 0


def test_old_store_without_new_columns_still_renders(tmp_path):
    run = make_run(tmp_path / "old", [Fake("a", 3, "none", 0.5, 0.1, 0.2)])
    con = sqlite3.connect(run / "results.sqlite")
    with con:  # the first release's models table had no 'extra' column
        con.execute("ALTER TABLE models DROP COLUMN extra")
    con.close()
    before = (run / "results.sqlite").read_bytes()
    write_outputs([run], tmp_path / "out", formats=("csv", "json"))
    assert pd.read_csv(tmp_path / "out" / "leaderboard.csv")["clean.accuracy"].item() == pytest.approx(0.5)
    assert (run / "results.sqlite").read_bytes() == before  # readers never migrate (or otherwise write) a store


def test_incomplete_run_is_said_so(tmp_path):
    run = make_run(tmp_path / "r", [Fake("a", 3, "none", 0.5, 0.1, 0.2)])
    con = sqlite3.connect(run / "results.sqlite")
    with con:  # a run killed before its last two cells: planned, never finished
        con.execute("UPDATE runs SET status = 'interrupted'")
        for label in ("deepfool-2", "spatial-2"):
            con.execute("INSERT INTO run_cells VALUES ('20260101T000000-aaaaaa', ?, 'eval', 'tk', 'b', 'tomen_cnn', "
                        "'synthetic', 0, ?)", (f"missing-{label}", label))
    con.close()
    write_outputs([run], tmp_path / "out", formats=("md", "html"))
    note = "run r is not complete (interrupted: 3 of 5 evaluations finished); missing values show as –"
    assert f"> **Note:** {note}" in (tmp_path / "out" / "leaderboard.md").read_text()
    assert f'<p class="note incomplete">{note}</p>' in (tmp_path / "out" / "leaderboard.html").read_text()
    complete = make_run(tmp_path / "c", [Fake("a", 3, "none", 0.5, 0.1, 0.2)])
    write_outputs([complete], tmp_path / "out2", formats=("md",))
    assert "Note:" not in (tmp_path / "out2" / "leaderboard.md").read_text()


def test_protocol_is_stated_with_every_table(tmp_path):
    """A config's description (e.g. a CPU-scale protocol) is repeated in the md, HTML, LaTeX and JSON tables."""
    protocol = "CPU-scale protocol: width 4 & <2> layers"
    run = make_run(tmp_path / "r", [Fake("a", 3, "none", 0.5, 0.1, 0.2)], description=protocol)
    figures = write_outputs([run], tmp_path / "out", formats=("md", "html", "latex", "json", "csv", "plots"))
    out = tmp_path / "out"
    assert not (out / "leaderboard.csv").read_text().startswith("#")  # a plain table: read_csv reads it as is
    assert pd.read_csv(out / "leaderboard.csv").model.tolist() == ["a"]
    meta = json.loads((out / "leaderboard.meta.json").read_text())
    assert meta["protocols"] == {"r": protocol} and meta["csv"] == "leaderboard.csv"
    assert set(meta["columns"]) == set(pd.read_csv(out / "leaderboard.csv").columns)
    svg = (out / "plots" / "accuracy_vs_robustness.svg").read_text()
    assert "CPU-scale protocol: width 4 &amp; &lt;2&gt; layers" in svg and any(p.suffix == ".png" for p in figures)
    md = (out / "leaderboard.md").read_text()  # Markdown renders raw HTML: escaped as in the HTML page
    assert "> **Note:** protocol of run r: CPU-scale protocol: width 4 &amp; &lt;2&gt; layers" in md
    html = (out / "leaderboard.html").read_text()
    assert '<p class="note protocol">protocol of run r: CPU-scale protocol: width 4 &amp; &lt;2&gt; layers</p>' in html
    caption = next(line for line in (out / "leaderboard.tex").read_text().splitlines() if "caption" in line)
    assert "Protocol of run r: CPU-scale protocol: width 4 \\& \\textless{}2\\textgreater{} layers." in caption
    assert "Intervals [lo, hi]: single-seed rows: 95\\% bootstrap over the test images" in caption
    assert json.loads((out / "leaderboard.json").read_text())["protocols"] == {"r": protocol}
    plain = make_run(tmp_path / "p", [Fake("a", 3, "none", 0.5, 0.1, 0.2)])
    write_outputs([plain], tmp_path / "out2", formats=("md",))
    assert "protocol" not in (tmp_path / "out2" / "leaderboard.md").read_text()


def test_rerendered_plots_are_byte_identical(run_dir, tmp_path):
    """Re-rendering the same store gives the same SVG files (no dates, no random element ids)."""
    first = {p.name: p.read_bytes() for p in write_outputs([run_dir], tmp_path / "a", formats=("plots",))
             if p.suffix == ".svg"}
    second = {p.name: p.read_bytes() for p in write_outputs([run_dir], tmp_path / "b", formats=("plots",))
              if p.suffix == ".svg"}
    assert first and first == second
