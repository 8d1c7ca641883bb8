"""``rbleak run CONFIG --until-decided SET``: add training seeds in batches until every primary comparison of
the claim set is decided or futile, or the cap on seeds is reached (the design: :mod:`robustbench_leak.sequential`).

Each look first runs the cells its primary comparisons read (their models and attacks) for the first k seeds
(the config's own seeds, then the next integers), so the decision comes as early as the CPU allows; after the
look the rest of the protocol runs for the same seeds, so every seed added gets the whole protocol. It evaluates
the claim set's primary comparisons on the seeds both models of each have finished, and tests them against
their O'Brien-Fleming boundaries on the information fraction, with the variance components estimated at this
look (s^2 and V_sh of the crossed model). Every look is stored on the run it followed (``runs.looks``) and
printed by ``rbleak claims``. A run stopped between looks (``--time-limit``, an interrupt) resumes its design:
the next run into the same folder with the same claim set, batch, cap and rules takes up the stored looks (the
information fractions, local levels and states of each comparison) and goes on to the next look, so the error
rate holds for the whole sequence across sessions. A finished sequence run again completes its seeds' cells and
takes no new look; one with other settings starts anew.

``--end-design REASON`` ends a stored design at its last look for a reason outside the data (a resource limit,
say): the reason is stored on that look and printed by the report, and the run completes the look's seeds and
adds none. Ending at a look can only remove chances to reject, so the family-wise error rate holds; the
comparisons still open stay undecided.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Callable

from .config import Config
from .sequential import Comparison, Family, fractions_for
from .store.schema import STORE_NAME
from .run.driver import CellsFailed, record_looks
from .run.tasks import EvalTask

Log = Callable[[str], None]


def seed_sequence(config: Config, batch: int, cap: int) -> list[int]:
    """The seeds in the order the looks add them: the config's, then the next integers, ``cap`` in all."""
    seeds = list(config.run.seeds)[:cap]
    nxt = max(seeds) + 1
    while len(seeds) < cap:
        seeds.append(nxt)
        nxt += 1
    return seeds


def look_sizes(first: int, batch: int, cap: int) -> list[int]:
    sizes = list(range(first, cap, batch)) + [cap]
    return sorted(set(s for s in sizes if s >= 2))


def _answered_here(config: Config, spec) -> bool:
    """Whether the claim reads this config's cells (a claim naming another config is that config's)."""
    return not spec.config or spec.config == Path(config.path or "").name


def check_claim_set(config: Config, claim_set_name: str):
    """The claim set, refused in one line (before any work) when it names a model or attack the config lacks
    or declares no primary comparison. A claim answered by another config (its own ``config:``, as the paper
    set's AutoAttack claim) is that config's to check: the looks read this config's cells only."""
    from .report.claim_set import load_claim_set

    claim_set = load_claim_set(claim_set_name)
    models = {m.name for m in config.run.models}
    attacks = {a.label for a in config.attacks}
    for i, spec in enumerate(claim_set.claims):
        if not _answered_here(config, spec):
            continue
        for j, p in enumerate(spec.comparisons):
            for key, name, known in (("a", p.a, models), ("b", p.b, models), ("attack", p.attack, attacks)):
                if name not in known:
                    raise ValueError(f"{claim_set.source}: claims.{i}.comparisons.{j}.{key}: {name!r} is not in "
                                     f"{config.path} (allowed: {', '.join(sorted(known))})")
    if not any(spec.role == "primary" for spec in claim_set.claims):
        raise ValueError(f"{claim_set.source}: claims: --until-decided needs at least one primary claim")
    return claim_set


def primary_step(config: Config, claim_set) -> Config | None:
    """The config cut to the models and attacks the primary comparisons read (this config's claims), or None
    when that is the whole config: a look needs only these cells, so they run first."""
    pairs = [p for spec in claim_set.claims if spec.role == "primary" and _answered_here(config, spec)
             for p in spec.comparisons]
    models = {name for p in pairs for name in (p.a, p.b)}
    attacks = {p.attack for p in pairs}
    kept_models = [m for m in config.run.models if m.name in models]
    kept_attacks = [a for a in config.attacks if a.label in attacks]
    if len(kept_models) == len(config.run.models) and len(kept_attacks) == len(config.attacks):
        return None
    return config.model_copy(update={"attacks": kept_attacks,
                                     "run": config.run.model_copy(update={"models": kept_models})})


def _with_seeds(config: Config, seeds: list[int]) -> Config:
    return config.model_copy(update={"run": config.run.model_copy(update={"seeds": seeds})})


def _unless_primary(failed: CellsFailed, claim_set, log: Log) -> None:
    """Re-raise ``failed`` when a failed cell is one a primary comparison reads; otherwise say which cells
    failed and let the look go on (e.g. cells of models whose weights cannot be reproduced here)."""
    primary = {(name, p.attack) for spec in claim_set.claims if spec.role == "primary"
               for p in spec.comparisons for name in (p.a, p.b)}
    evals = [o.job.task for o in failed.failed if isinstance(o.job.task, EvalTask)]
    if any((t.train.model, t.attack_label) in primary for t in evals):
        raise failed
    labels = sorted({f"{t.train.model} / {t.attack_label} / seed {t.seed}" for t in evals})
    log(f"[look] {len(labels)} cells failed that no primary comparison reads ({'; '.join(labels[:6])}"
        + (f"; and {len(labels) - 6} more" if len(labels) > 6 else "") + "); the look goes on")


def _stored_design(out: Path, claim_set, batch: int, cap: int, sizes: list[int], r) -> list[dict]:
    """The stored looks of the design this run continues ([] when there is none): same claim set, batch, cap,
    level and futility threshold, the same primary comparisons in the same order, looks taken at this
    design's sizes (a last look with a stop reason: the design is finished)."""
    from .report.sequential_looks import stored_looks

    looks = stored_looks(out) if (Path(out) / STORE_NAME).exists() else []
    if not looks:
        return []
    first = looks[0]
    if (first.get("claim_set"), first.get("batch"), first.get("cap"), first.get("alpha"), first.get("futility")) \
            != (claim_set.name, batch, cap, r.alpha, r.sequential.futility):
        return []
    prefixes = [f"{p.a} vs {p.b} on {p.attack} (" for spec in claim_set.claims if spec.role == "primary"
                for p in spec.comparisons]
    names = first.get("comparisons") or []
    if len(names) != len(prefixes) or not all(n.startswith(p) for n, p in zip(names, prefixes)):
        return []
    if [look["seeds"] for look in looks] != sizes[:len(looks)]:
        return []
    if any(look.get("comparisons") != names for look in looks):
        return []
    return looks


def _resumed_family(looks: list[dict]) -> Family:
    last = looks[-1]
    m = len(last["comparisons"])
    return Family(m, last["alpha"], last["futility"],
                  history=[[float(look["fractions"][j]) for look in looks] for j in range(m)],
                  levels=[float(x) for x in last["levels"]], status=list(last["decided"]))


def _end_design(out: Path, looks: list[dict], reason: str, design: str, log: Log) -> None:
    """Store ``reason`` as the stop of the design's last look (refused when no look of this design is stored)."""
    from .report.sequential_looks import looks_and_run

    if not looks:
        raise ValueError(f"--end-design: {out} holds no look of this sequential design ({design}) to end; "
                         "allowed only after a look of the same claim set, --seed-batch and --max-seeds")
    if looks[-1].get("reason"):
        log(f"[look] the design already stopped at look {len(looks)} ({looks[-1]['reason']}); --end-design "
            "changes nothing")
        return
    looks[-1]["reason"] = f"ended after this look on {date.today().isoformat()} ({reason})"
    record_looks(out, looks_and_run(out)[1], json.dumps(looks))


def run_until_decided(config: Config, out: Path, claim_set_name: str, batch: int, cap: int,
                      run: Callable[..., Path], log: Log, end_reason: str | None = None) -> dict:
    """Looks at the config's number of seeds (at least 2), then every ``batch`` more, up to ``cap``; ``run``
    runs a config into ``out`` (pipeline.run_config with the command line's settings; it is handed the claim
    set so that each run records its definition hash). ``end_reason``: end the stored design at its last look
    for this reason (``--end-design``). Returns the last look's record."""
    from .report.claims import evaluate_claims
    from .report.verdicts import rules

    claim_set = check_claim_set(config, claim_set_name)
    order = seed_sequence(config, batch, cap)
    sizes = look_sizes(max(2, min(len(config.run.seeds), cap)), batch, cap)
    r = rules()
    family: Family | None = None
    primary = primary_step(config, claim_set)

    def run_step(step: Config) -> None:
        try:
            run(step, out, claim_sets=[claim_set])
        except CellsFailed as failed:
            _unless_primary(failed, claim_set, log)

    looks = _stored_design(out, claim_set, batch, cap, sizes, r)
    if end_reason is not None:
        _end_design(out, looks, end_reason, f"claim set {claim_set.name}, batch {batch}, cap {cap}", log)
    record: dict = looks[-1] if looks else {}
    if looks and looks[-1].get("reason"):
        log(f"[look] the sequential design stopped at look {len(looks)} at {looks[-1]['seeds']} seeds "
            f"({looks[-1]['reason']}); completing its seeds' cells")
        run_step(_with_seeds(config, order[:looks[-1]["seeds"]]))
        return record
    if looks:
        family = _resumed_family(looks)
        log(f"[look] resuming the sequential design after look {len(looks)} at {looks[-1]['seeds']} seeds")
        sizes = [k for k in sizes if k > looks[-1]["seeds"]]
        if primary is not None:  # the rest of the protocol the last look owed its seeds, before adding any
            run_step(_with_seeds(config, order[:looks[-1]["seeds"]]))
    for n, k in enumerate(sizes):
        # the cells the look reads first, then (after the look) the rest of the protocol for the same seeds
        run_step(_with_seeds(primary or config, order[:k]))
        claims, info = evaluate_claims(out, claim_set)
        comps = [(claim, c) for claim in claims if claim.role == "primary" and not claim.missing
                 for c in claim.comparisons]
        if family is None:
            family = Family(len(comps), r.alpha, r.sequential.futility)
        final = k == sizes[-1]
        stat, fracs, planned = [], [], []
        for claim, c in comps:
            x = c.crossed
            margin = c.test.margin if claim.kind == "equivalence" else None
            stat.append(Comparison(c.effect, c.se, margin))
            f = fractions_for([c.n_seeds, *sizes[n + 1:]], cap, x.s2, x.v_shared)
            fracs.append(f[0])
            planned.append(tuple(f[1:]))
        look = family.look(k, stat, fracs, final, planned)
        names = [f"{c.model_a} vs {c.model_b} on {c.attack} ({c.metric})" for _, c in comps]
        if family.done():
            look.reason = "every primary comparison is decided or futile"
        elif final:
            look.reason = f"the cap of {cap} seeds is reached"
        record = {**asdict(look), "comparisons": names, "seeds_used": [c.seeds for _, c in comps],
                  "claim_set": claim_set.name, "cap": cap, "batch": batch, "alpha": r.alpha,
                  "futility": r.sequential.futility}
        looks.append(record)
        record_looks(out, info["run_id"], json.dumps(looks))
        log(f"look {len(looks)} at {k} seeds: " + "; ".join(f"{nm}: {st}" for nm, st in zip(names, look.decided))
            + (f" -> stop: {look.reason}" if look.reason else ""))
        if primary is not None:
            run_step(_with_seeds(config, order[:k]))
        if look.reason:
            break
    return record
