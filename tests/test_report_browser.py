"""The HTML leaderboard of two merged runs in a real headless Chromium (Debian's ``chromium``, driven by
Playwright): it loads without console errors or network requests, a header click re-sorts the rows, the
filters hide rows and columns, and a screenshot lands in ``test-artifacts/``.

CI installs chromium and sets RBLEAK_REQUIRE_BROWSER=1, which turns a missing browser into a failure.
"""

import os
import shutil
from pathlib import Path

import pytest
from report_data import Fake, make_run, three_models

from robustbench_leak.cli import main

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("RBLEAK_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _require_browser():
    problem = None
    if not (shutil.which(CHROMIUM) or os.access(CHROMIUM, os.X_OK)):
        problem = f"{CHROMIUM} not found (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError as exc:
            problem = f"playwright is not installed ({exc}; pip install -e '.[test]')"
    if problem:
        if os.environ.get("RBLEAK_REQUIRE_BROWSER") == "1":
            pytest.fail(problem)
        pytest.skip(problem)


@pytest.fixture(scope="module")
def page_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    alpha = make_run(root / "alpha", three_models(), seeds=(0, 1), name="alpha", run_id="r-alpha")
    beta = make_run(root / "beta", [Fake("cnn-3x3", 3, "none", 0.85, 0.15, 0.35),
                                    Fake("wide-7x7-hamming", 7, "hamming", 0.95, 0.25, 0.6)],
                    name="beta", run_id="r-beta")
    out = root / "merged"
    assert main(["leaderboard", str(alpha), str(beta), "--out", str(out)]) == 0
    return out / "leaderboard.html"


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1400, "height": 900})
        yield ctx
        ctx.close()


@pytest.fixture
def page(context, page_path):
    page = context.new_page()
    page.problems, page.requests = [], []
    page.on("console", lambda m: m.type in ("error", "warning") and page.problems.append(f"console {m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
    page.on("request", lambda r: page.requests.append(r.url))
    page.goto(page_path.as_uri())
    page.wait_for_load_state("load")
    yield page
    page.close()


def visible(page, col):
    return page.eval_on_selector_all(
        f'#board tbody tr:not([hidden]) td[data-col="{col}"]', "cells => cells.map(c => c.dataset.sort)")


def test_loads_without_errors_or_network(page, page_path):
    assert page.problems == []
    assert page.requests and all(u == page_path.as_uri() or u.startswith("data:") for u in page.requests), page.requests
    assert page.title() == "Leaderboard: alpha, beta"
    assert page.locator("#board tbody tr").count() == 5
    assert page.locator("#row-count").inner_text() == "5 of 5 rows"
    # every figure decoded (naturalWidth > 0 only once a data URI image has loaded)
    widths = page.eval_on_selector_all("figure img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == 6 and min(widths) > 100
    # the flagged row shows its flag, with the text as a tooltip
    flags = page.locator("td.flagged .flag")
    assert flags.count() == 4 and flags.first.get_attribute("title").startswith("gradient masking suspected")
    # provenance of a row opens on click
    page.locator('#board tbody tr:first-child td[data-col="run"] summary').click()
    assert page.locator('#board tbody tr:first-child td[data-col="run"] dd').nth(3).is_visible()
    assert page.problems == []


def test_header_click_sorts_rows(page):
    ranked = visible(page, "deepfool.rho_mean")
    assert [float(v) for v in ranked] == sorted((float(v) for v in ranked), reverse=True)  # leaderboard order
    header = page.locator('#board th[data-col="clean.accuracy"]')
    header.click()
    values = [float(v) for v in visible(page, "clean.accuracy")]
    assert values == sorted(values, reverse=True) and values != [float(v) for v in ranked]
    assert header.get_attribute("aria-sort") == "descending"
    header.click()
    assert [float(v) for v in visible(page, "clean.accuracy")] == sorted(values)
    assert header.get_attribute("aria-sort") == "ascending"
    page.locator('#board th[data-col="model"]').click()  # text: A to Z first
    assert visible(page, "model") == sorted(visible(page, "model"))
    assert visible(page, "model")[0] == "cnn-3x3"
    assert page.problems == []


def test_filters_hide_rows_and_columns(page):
    page.select_option("#filter-window", "hamming")
    assert sorted(visible(page, "model")) == ["cnn-7x7-hamming", "wide-7x7-hamming"]
    assert page.locator("#row-count").inner_text() == "2 of 5 rows"
    page.fill("#filter-text", "wide")
    assert visible(page, "model") == ["wide-7x7-hamming"]
    page.select_option("#filter-window", "")
    page.fill("#filter-text", "beta")  # the run column is searchable too
    assert sorted(visible(page, "model")) == ["cnn-3x3", "wide-7x7-hamming"] and visible(page, "run") == ["beta"] * 2
    page.fill("#filter-text", "")
    page.select_option("#filter-kernel", "3x3")
    assert visible(page, "model") == ["cnn-3x3", "cnn-3x3"] and sorted(visible(page, "run")) == ["alpha", "beta"]
    page.select_option("#filter-kernel", "")
    assert page.locator("#board tbody tr:not([hidden])").count() == 5
    # the attack filter hides the other attacks' columns
    page.select_option("#filter-attack", "spatial")
    assert page.locator('#board th[data-col="spatial.robust_accuracy"]').is_visible()
    assert not page.locator('#board th[data-col="deepfool.rho_mean"]').is_visible()
    assert not page.locator('#board tbody td[data-col="deepfool.rho_mean"]').first.is_visible()
    assert page.locator('#board tbody td[data-col="model"]').first.is_visible()
    assert page.problems == []


def test_screenshot(page):
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "leaderboard.png"
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    page.screenshot(path=str(ARTIFACTS / "leaderboard-top.png"))
