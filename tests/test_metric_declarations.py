"""One place per metric: every attack's metrics are declared, the legend and percent formats read the
declarations (the old METRIC_DOCS / PERCENT_METRICS names stay usable), and ranking follows the direction."""

from __future__ import annotations

import pytest

from robustbench_leak import metrics
from robustbench_leak.attacks import list_attacks, undeclared_metrics
from robustbench_leak.metrics import METRIC_DOCS, PERCENT_METRICS, Metric, declare, metric_spec
from robustbench_leak.report import fmt


def test_every_attack_declares_what_it_shows():
    assert {f"{cls.kind}/{cls.engine}": undeclared_metrics(cls) for cls in list_attacks()
            if undeclared_metrics(cls)} == {}


def test_views_follow_the_declarations():
    assert METRIC_DOCS["rho_mean"] == metric_spec("rho_mean").description
    assert "robust_accuracy" in PERCENT_METRICS and "rho_mean" not in PERCENT_METRICS
    assert fmt.PERCENT_METRICS is PERCENT_METRICS  # the old import path, the same view
    assert set(PERCENT_METRICS) == {m for m, spec in metrics.declared_metrics().items() if spec.percent}
    assert fmt.value_text(0.5, "robust_accuracy") == "50.0%" and fmt.value_text(0.5, "rho_mean") == "0.5000"


def test_old_style_entries_still_work(monkeypatch):
    """Code written before declarations (an entry in METRIC_DOCS, a name in PERCENT_METRICS) keeps working."""
    monkeypatch.setattr(metrics, "_EXTRA_DOCS", {})
    monkeypatch.setattr(metrics, "_EXTRA_PERCENT", set())
    METRIC_DOCS["old_style_rate"] = "an old-style metric"
    PERCENT_METRICS.add("old_style_rate")
    assert METRIC_DOCS.get("old_style_rate") == "an old-style metric" and "old_style_rate" in METRIC_DOCS
    assert fmt.value_text(0.25, "old_style_rate") == "25.0%"
    spec = metric_spec("old_style_rate")
    assert spec.percent and spec.higher_is_better and spec.description == "an old-style metric"


def test_a_metric_declared_twice_must_mean_the_same():
    declare(Metric("rho_mean", metric_spec("rho_mean").description, unit="ratio"))  # the same again: fine
    with pytest.raises(ValueError, match="declared twice"):
        declare(Metric("rho_mean", "something else"))


def test_ranking_direction_comes_from_the_declaration():
    assert fmt.higher_is_better("deepfool.rho_mean") and fmt.higher_is_better("clean.accuracy")
    assert not fmt.higher_is_better("deepfool.success_rate") and not fmt.higher_is_better("minnorm.passes")
    assert not fmt.higher_is_better("params") and not fmt.higher_is_better("flops")
    assert fmt.rank_order("minnorm.overestimate_ddn") == "ascending: lower is better"
    assert fmt.rank_order("deepfool.rho_mean") == "descending"


def test_metric_is_its_name():
    m = Metric("x_rate", "a rate", percent=True, higher_is_better=False)
    assert m == "x_rate" and {m: 1}["x_rate"] == 1 and f"a.{m}" == "a.x_rate"
    import pickle

    back = pickle.loads(pickle.dumps(m))
    assert (back, back.description, back.percent, back.higher_is_better) == ("x_rate", "a rate", True, False)
