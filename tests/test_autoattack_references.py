"""Native AutoAttack against torchattacks 3.5.1 (a port of the reference code) and ART's APGD on the same tiny
model and 64 images, at identical settings (10 iterations as torchattacks' AutoAttack runs, Square's queries cut
to keep the test fast; one thread: on a tiny model PyTorch's threads cost more than they give). Robust accuracy is RobustBench's (clean-misclassified images count as not robust; an
example counts only within eps). With ``RBLEAK_REQUIRE_TORCHATTACKS=1`` (the CI) a missing torchattacks fails
these tests instead of skipping; ART is a dependency of the package."""

import importlib
import os
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import train_one_conv

from robustbench_leak.attacks import build_attack
from robustbench_leak.attacks.native_apgd import apgd_run

CPU = torch.device("cpu")
N_ITER, QUERIES = 10, 300
EPS = {"linf": 0.03, "l2": 0.5}  # where the tiny model keeps about half its images under APGD-CE
TA_NORM = {"linf": "Linf", "l2": "L2"}
ONE_POINT = 0.01


@pytest.fixture(scope="module")
def small_windowed_cnn():
    """Not windowed: a one-convolution network (a few ms per pass) trained on synthetic gratings, its 64 test
    images, labels and clean predictions. Named as the minimum-norm tests' fixture so the tests read alike."""
    from robustbench_leak.data import load_dataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = load_dataset("synthetic", n_train=512, n_test=64)
    model = train_one_conv(data)
    model.eval().requires_grad_(False)
    x, y = data.test_x, data.test_y
    with torch.no_grad():
        clean = model(x).argmax(1)
    yield model, x, y, clean
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ta():
    try:
        return importlib.import_module("torchattacks")
    except ImportError as exc:
        if os.environ.get("RBLEAK_REQUIRE_TORCHATTACKS") == "1":
            pytest.fail(f"RBLEAK_REQUIRE_TORCHATTACKS=1 but torchattacks does not import ({exc}); "
                        "pip install --no-deps torchattacks==3.5.1")
        pytest.skip("torchattacks is not installed (pip install --no-deps torchattacks==3.5.1)")


def robust_accuracy(model, x, y, adv, norm, eps) -> float:
    """RobustBench's: correct on the example and the example within eps (clean-misclassified: adv is x, wrong)."""
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    with torch.no_grad():
        correct = model(adv).argmax(1) == y
    return float((correct | (size > eps * (1 + 1e-5) + 1e-7)).float().mean())


def assert_close_not_weaker(native: float, reference: float, n: int) -> None:
    """Within 1 point (or one image, on fewer than 100 images), and never weaker (higher) by more than that."""
    tol = max(ONE_POINT, 1 / n) + 1e-9
    assert abs(native - reference) <= tol, (native, reference)
    assert native <= reference + tol, (native, reference)


class Recorder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.logits = model, []

    def forward(self, z):
        out = self.model(z)
        self.logits.append(out.detach().clone())
        return out


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_loss_trace_equals_torchattacks(small_windowed_cnn, ta, norm):
    """Same random start (generator seeded as torchattacks seeds the global one): every iterate's CE loss equal."""
    model, x, y, clean = small_windowed_cnn
    keep = clean == y  # both attack only the correctly classified images
    xc, yc = x[keep], y[keep]
    rec = Recorder(model)
    ref = ta.APGD(rec, norm=TA_NORM[norm], eps=EPS[norm], steps=N_ITER, seed=0, loss="ce")
    torch.manual_seed(0)
    _, ref_robust, _, _ = ref.attack_single_run(xc, yc)
    ref_trace = torch.stack([F.cross_entropy(z, yc, reduction="none") for z in rec.logits[1:]])
    _, fooled, trace = apgd_run(model, xc, yc, norm=norm, eps=EPS[norm], n_iter=N_ITER,
                                gen=torch.Generator().manual_seed(0))
    assert 0 < fooled.float().mean() < 1  # the comparison is not vacuous
    torch.testing.assert_close(trace, ref_trace, rtol=1e-4, atol=1e-5)
    assert torch.equal(fooled, ref_robust == 0)


def _native(model, x, y, norm, members, gen_seed=0, **params):
    attack = build_attack("autoattack", norm=norm, eps=EPS[norm], version="custom", members=list(members),
                          n_iter=N_ITER, n_queries=QUERIES, batch_size=len(x), **params)
    return attack.run(model, x, y, CPU, progress=False, gen=torch.Generator().manual_seed(gen_seed))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_standard_and_each_member_match_torchattacks(small_windowed_cnn, ta, norm):
    """The standard sequence (APGD-CE, APGD-T, FAB-T, Square; each on the images still robust) against
    torchattacks' members run the same way: robust accuracy after every member and at the end."""
    model, x, y, _ = small_windowed_cnn
    eps, tn = EPS[norm], TA_NORM[norm]
    refs = {"apgd-ce": ta.APGD(model, norm=tn, eps=eps, steps=N_ITER, seed=0, loss="ce"),
            "apgd-t": ta.APGDT(model, norm=tn, eps=eps, steps=N_ITER, seed=0, n_classes=10),
            "fab-t": ta.FAB(model, norm=tn, eps=eps, steps=N_ITER, seed=0, multi_targeted=True, n_classes=10),
            "square": ta.Square(model, norm=tn, eps=eps, n_queries=QUERIES, seed=0)}
    result = _native(model, x, y, norm, refs)
    adv = x.clone()
    robust = torch.ones(len(x), dtype=torch.bool)
    for member, attack in refs.items():  # torchattacks' MultiAttack: each member on the images still robust
        idx = robust.nonzero()[:, 0]
        out = attack(x[idx], y[idx])
        d = (out - x[idx]).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        with torch.no_grad():
            broke = (model(out).argmax(1) != y[idx]) & (size <= eps * (1 + 1e-5) + 1e-7)
        adv[idx[broke]] = out[broke]
        robust[idx[broke]] = False
        assert_close_not_weaker(result.metrics[f"robust_accuracy_after_{member.replace('-', '_')}"],
                                float(robust.float().mean()), len(x))
    reference = robust_accuracy(model, x, y, adv, norm, eps)
    assert 0 < reference < float((model(x).argmax(1) == y).float().mean())  # not vacuous
    assert_close_not_weaker(result.metrics["robust_accuracy"], reference, len(x))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_rand_version_matches_torchattacks(small_windowed_cnn, ta, norm):
    """The ``rand`` version (APGD-CE, then APGD-DLR, each with EOT over 20 draws) against torchattacks'
    AutoAttack(version='rand') at its settings (10 iterations, one restart). On a deterministic model every draw
    gives the same gradient, so the two must agree as the standard version does."""
    model, x, y, _ = small_windowed_cnn
    eps = EPS[norm]
    ref = ta.AutoAttack(model, norm=TA_NORM[norm], eps=eps, version="rand", n_classes=10, seed=0)
    reference = robust_accuracy(model, x, y, ref(x, y), norm, eps)
    native = build_attack("autoattack", norm=norm, eps=eps, version="rand", n_iter=N_ITER, batch_size=len(x)).run(
        model, x, y, CPU, progress=False, gen=torch.Generator().manual_seed(0))
    assert native.info["members"] == ["apgd-ce", "apgd-dlr"]
    assert 0 < reference < float((model(x).argmax(1) == y).float().mean())  # not vacuous
    assert_close_not_weaker(native.metrics["robust_accuracy"], reference, len(x))


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("member", ["apgd-t", "fab-t", "square", "apgd-dlr", "fab"])
def test_single_members_match_torchattacks(small_windowed_cnn, ta, member, norm):
    """Each member alone on every image (the ``apgd-t``, ``fab-t`` and ``square`` presets; the rand version's
    ``apgd-dlr`` and untargeted ``fab`` of a custom list), L-inf and L2."""
    model, x, y, _ = small_windowed_cnn
    eps, tn = EPS[norm], TA_NORM[norm]
    ref = {"apgd-t": lambda: ta.APGDT(model, norm=tn, eps=eps, steps=N_ITER, seed=0, n_classes=10),
           "fab-t": lambda: ta.FAB(model, norm=tn, eps=eps, steps=N_ITER, seed=0, multi_targeted=True,
                                   n_classes=10),
           "square": lambda: ta.Square(model, norm=tn, eps=eps, n_queries=QUERIES, seed=0),
           "apgd-dlr": lambda: ta.APGD(model, norm=tn, eps=eps, steps=N_ITER, seed=0, loss="dlr"),
           "fab": lambda: ta.FAB(model, norm=tn, eps=eps, steps=N_ITER, seed=0, multi_targeted=False,
                                 n_classes=10)}[member]()
    reference = robust_accuracy(model, x, y, ref(x, y), norm, eps)
    assert_close_not_weaker(_native(model, x, y, norm, [member]).metrics["robust_accuracy"], reference, len(x))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_ce_matches_art(small_windowed_cnn, norm):
    """ART's AutoProjectedGradientDescent (its own implementation) at the same iterations, step and restarts."""
    from art.attacks.evasion import AutoProjectedGradientDescent

    from robustbench_leak.attacks.art import art_classifier

    model, x, y, _ = small_windowed_cnn
    eps = EPS[norm]
    clf = art_classifier(model, tuple(x.shape[1:]), 10, CPU)
    np.random.seed(0)
    art = AutoProjectedGradientDescent(clf, norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=2 * eps,
                                       max_iter=N_ITER, nb_random_init=1, batch_size=len(x),
                                       loss_type="cross_entropy", verbose=False)
    reference = robust_accuracy(model, x, y, torch.from_numpy(art.generate(x.numpy(), y=y.numpy())), norm, eps)
    assert 0 < reference < 1
    assert_close_not_weaker(_native(model, x, y, norm, ["apgd-ce"]).metrics["robust_accuracy"], reference, len(x))


def test_the_bench_compares_autoattack_with_arts_on_the_members_both_have(small_windowed_cnn):
    """`rbleak bench --references`' ART row: ART's AutoAttack (run sequentially, without the optional
    multiprocess) and the native custom version with the same members and settings, on the same images: both
    timed, and the native robust accuracy no weaker than ART's beyond Square's draws (2 of 64 images)."""
    from robustbench_leak.attacks.art import art_classifier
    from robustbench_leak.bench.references import ART_AA_MEMBERS, bench_art_autoattack

    model, x, y, _ = small_windowed_cnn
    clf = art_classifier(model, tuple(x.shape[1:]), 10, CPU)
    settings = {"n_iter": N_ITER, "n_restarts": 1, "n_queries": QUERIES, "p_init": 0.8}
    for norm in ("linf", "l2"):
        row = bench_art_autoattack(model, clf, x, y, CPU, norm, EPS[norm], torch.Generator().manual_seed(0), settings)
        assert row["members"] == list(ART_AA_MEMBERS) and row["settings"] == settings
        assert row["native_images_per_s"] > 0 and row["art_images_per_s"] > 0
        assert row["native_vs_art"] == pytest.approx(row["native_images_per_s"] / row["art_images_per_s"])
        assert 0 <= row["native_robust_accuracy"] <= row["art_robust_accuracy"] + 2 / 64, norm
        passes = row["model_passes"]
        assert passes["image_passes"] >= len(x) * QUERIES * row["native_robust_accuracy"]  # Square's queries at least
        assert 0 < passes["with_backward"] < passes["calls"] and row["model_pass_seconds"] > 0
        assert row["art_over_model_passes"] == pytest.approx(row["art_seconds"] / row["model_pass_seconds"])


def test_recording_the_passes_changes_nothing_and_replays_them(small_windowed_cnn):
    from robustbench_leak.bench.references import PassRecorder, replay_passes

    model, x, y, _ = small_windowed_cnn
    kw = dict(norm="linf", eps=EPS["linf"], version="custom", members=["apgd-ce", "square"], n_iter=N_ITER,
              n_restarts=1, n_queries=50, p_init=0.8)
    plain = build_attack("autoattack", **kw).run(model, x, y, CPU, progress=False, gen=torch.Generator().manual_seed(0))
    recorder = PassRecorder(model)
    recorded = build_attack("autoattack", **kw).run(recorder, x, y, CPU, progress=False,
                                                    gen=torch.Generator().manual_seed(0))
    assert recorded.metrics == plain.metrics
    assert recorded.samples.keys() == plain.samples.keys()
    assert all(np.array_equal(recorded.samples[k], plain.samples[k]) for k in plain.samples)
    assert sum(g for _, g in recorder.calls) >= N_ITER  # APGD's differentiated steps
    assert all(n <= len(x) for n, _ in recorder.calls)
    assert replay_passes(model, recorder.calls, x, CPU) > 0 and replay_passes(model, [], x, CPU) == 0.0


def test_interleaved_timer_rotates_the_order_and_keeps_each_best():
    from robustbench_leak.bench.common import best_times_interleaved

    order = []
    best = best_times_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b"),
                                   "c": lambda: order.append("c")}, CPU, 3)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert set(best) == {"a", "b", "c"} and all(0 <= v < 1 for v in best.values())


def test_the_bench_times_autoattack_and_torchattacks_interleaved(small_windowed_cnn, monkeypatch):
    """Native AutoAttack and torchattacks' are timed in interleaved rounds with rotating order (a slow spell of
    the machine falls on both), every round seeded alike, and the ratio is that of the best times."""
    import robustbench_leak.bench.references as refs

    model, x, y, _ = small_windowed_cnn
    x, y = x[:8], y[:8]
    calls = []

    class StubAutoAttack:  # torchattacks' interface; returns the clean images (fast)
        def __init__(self, *a, **k):
            pass

        def __call__(self, xd, yd):
            calls.append("torchattacks")
            return xd

    real = refs.build_attack

    def counted(*a, **k):
        calls.append("native")
        return real(*a, **k)

    monkeypatch.setattr(refs, "_optional", lambda name: types.SimpleNamespace(AutoAttack=StubAutoAttack))
    monkeypatch.setattr(refs, "build_attack", counted)
    monkeypatch.setitem(refs.TORCHATTACKS_AA, "n_queries", 20)
    row = refs.native_vs_torchattacks_aa(model, x, y, CPU, "linf", EPS["linf"])
    assert calls == ["native", "torchattacks", "torchattacks", "native"][:2 * refs.AA_ROUNDS]
    assert row["rounds"] == refs.AA_ROUNDS
    ratio = row["native_images_per_s"] / row["torchattacks_images_per_s"]
    assert row["native_vs_torchattacks"] == pytest.approx(ratio)
    assert 0 <= row["native_robust_accuracy"] <= row["torchattacks_robust_accuracy"]  # the stub broke nothing
