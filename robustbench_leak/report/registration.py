"""Pre-registration that cannot drift: a SHA-256 of each claim's full definition.

A claim's definition is everything its verdict depends on besides the data: its title, kind and role, its
comparisons, its family (for a primary claim, every primary comparison of the set, since Holm reads them
together), the equivalence margins, and the verdict rules (``verdict_rules.yaml``, parsed). A run stores the
definitions and hashes of the claim sets written for its config when it starts (``runs.claims``); the report
compares the claim as judged now with what the store's first run recorded, and names the fields that
changed. For runs that predate the record, the claim's ``declared`` commit (the last commit that changed
its definition, checked against git by a test) is compared with the first run's start.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .claim_set import CLAIM_SET_DIR, ClaimSet, ClaimSpec, load_claim_set
from .verdicts import RULES_PATH

FIELDS = ("title", "kind", "role", "comparisons", "family", "margins", "rules")


def _comparison_text(c: dict[str, Any]) -> str:
    return f"{c['a']} vs {c['b']} on {c['attack']} ({c['metric']})"


def definitions(data: dict[str, Any], rules: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each claim's definition from a claim set's parsed YAML (``data``) and the parsed rules; tolerant of
    older claim-set files (a missing role is primary, missing margins are the rules')."""
    claims = data.get("claims") or []
    primary = [_comparison_text(c) for spec in claims if spec.get("role", "primary") == "primary"
               for c in spec.get("comparisons") or []]
    margins = data.get("margins") or (rules or {}).get("margins") or {}
    out = []
    for spec in claims:
        role = spec.get("role", "primary")
        out.append({"title": spec.get("title"), "kind": spec.get("kind"), "role": role,
                    "comparisons": [_comparison_text(c) for c in spec.get("comparisons") or []],
                    "family": primary if role == "primary" else role,
                    "margins": {k: margins.get(k) for k in ("accuracy", "rho")}, "rules": rules})
    return out


def digest(definition: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def current_rules() -> dict[str, Any]:
    return yaml.safe_load(RULES_PATH.read_text())


def claim_set_data(claim_set: ClaimSet) -> dict[str, Any]:
    """The parsed YAML a claim set was loaded from (its model as data when it was built in code)."""
    return claim_set.data()


def record(claim_set: ClaimSet) -> dict[str, Any]:
    """What a run stores for one claim set: each claim's definition (without the rules, stored once) and hash."""
    rules = current_rules()
    defs = definitions(claim_set_data(claim_set), rules)
    return {"claim_set": claim_set.name, "rules_sha256": digest({"rules": rules}),
            "claims": [{"sha256": digest(d), "definition": {k: v for k, v in d.items() if k != "rules"}}
                       for d in defs]}


def records_for_config(config_path: str | None) -> list[dict[str, Any]]:
    """The records of every shipped claim set written for this config, or with a claim answered by it (a
    claim's own ``config:``, as the paper set's AutoAttack claim); matched by file name."""
    if not config_path:
        return []
    name = Path(config_path).name
    out = []
    for path in sorted(CLAIM_SET_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            continue
        claims = data.get("claims") if isinstance(data.get("claims"), list) else []
        if data.get("config") == name or any(isinstance(c, dict) and c.get("config") == name for c in claims):
            out.append(record(load_claim_set(path)))
    return out


@dataclass(frozen=True)
class Registration:
    """A claim's pre-registration as the report states it."""
    sha256: str
    status: str  # "registered" | "post hoc"
    how: str  # the sentence the report prints
    changed: list[str] = field(default_factory=list)


def judge(claim_set: ClaimSet, stored: list[dict[str, Any]] | None, first_start: str | None,
          declared_before: list[bool], later: tuple[str, list[dict[str, Any]]] | None = None) -> list[Registration]:
    """Per claim: its hash now, and whether it equals what the store's first run recorded (``stored``: that
    run's records, None when it predates them; then ``declared_before`` decides, from the claim's declared
    commit date). ``later``: (start, records) of the first later run that recorded hashes, when the first
    did not: its stored hash is printed beside, and does not make a claim pre-registered."""
    rules = current_rules()
    defs = definitions(claim_set_data(claim_set), rules)
    rules_hash = digest({"rules": rules})
    then = next((r for r in stored or [] if r.get("claim_set") == claim_set.name), None)
    out = []
    for i, (d, spec) in enumerate(zip(defs, claim_set.claims)):
        h = digest(d)
        if then is None:
            reg = _by_date(h, spec, stored is not None, first_start, declared_before[i])
            after = next((r for r in (later[1] if later else []) if r.get("claim_set") == claim_set.name), None)
            if after is not None:
                old = _find(after["claims"], d, i)
                same = old is not None and old["sha256"] == h and after.get("rules_sha256") == rules_hash
                note = (f"; the run started {later[0]} stored `{old['sha256'][:12]}`, "
                        + ("equal to it" if same else "a different definition")) if old else ""
                reg = Registration(reg.sha256, reg.status, reg.how + note, reg.changed)
            out.append(reg)
            continue
        old = _find(then["claims"], d, i)
        if old is not None and old["sha256"] == h:
            out.append(Registration(h, "registered", f"hash stored when the run started ({first_start}) equals it"))
            continue
        changed = ([k for k in FIELDS if k != "rules" and old["definition"].get(k) != d[k]] if old else ["new claim"])
        if then.get("rules_sha256") != rules_hash:
            changed.append("rules")
        out.append(Registration(h, "post hoc", f"**post hoc**: changed since the run started ({first_start}): "
                                f"{', '.join(changed) or 'definition'}", changed))
    return out


def _find(claims: list[dict[str, Any]], d: dict[str, Any], i: int) -> dict[str, Any] | None:
    for c in claims:
        if c["definition"].get("title") == d["title"]:
            return c
    return claims[i] if i < len(claims) else None


def _by_date(h: str, spec: ClaimSpec, any_record: bool, first_start: str | None, before: bool) -> Registration:
    why = ("the run recorded no hash for this claim set" if any_record else
           "the run predates stored hashes")
    if spec.declared is None:
        return Registration(h, "post hoc", f"**post hoc**: not declared ({why})")
    last = f"definition last changed {spec.declared.date:%Y-%m-%d} ({spec.declared.commit[:7]}"
    last += f": {', '.join(spec.declared.changed)})" if spec.declared.changed else ")"
    if before:
        return Registration(h, "registered", f"{last}, before the run started ({why}; judged by commit date)")
    return Registration(h, "post hoc", f"**post hoc**: {last}, after the run started {first_start} ({why})",
                        list(spec.declared.changed))
