"""Claim sets as data: one YAML file per set under ``report/claim_sets/``, validated when loaded.

A claim set names the config it was written for (``config``, a file under ``configs/``), and each claim
lists paired comparisons ``a`` vs ``b`` on an attack label of that config, for a metric: ``correct``
(accuracy after the attack; clean accuracy for attack ``clean``) or ``rho`` (DeepFool's minimal
perturbation size, on the images both models classify correctly).

Each claim has a role (``primary``: in the Holm-corrected family; ``secondary`` and ``exploratory``: tested
uncorrected, under their own headings) and records when it was ``declared`` (the last commit that changed
its definition, that commit's date and what it changed), so a report can say whether it was declared before
the run it judges (report/registration.py; runs store each claim's hash when they start). A set may state its own equivalence ``margins`` with their justification (see verdict_rules.yaml).
"""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from ..config.yaml_io import read_yaml

from ..options import short
from .verdicts import Margins

CLAIM_SET_DIR = Path(__file__).parent / "claim_sets"


class ComparisonSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: str = Field(min_length=1, max_length=100)
    b: str = Field(min_length=1, max_length=100)
    attack: str = Field(min_length=1, max_length=100)
    # correct: accuracy after the attack; rho: minimal perturbation size; low_freq_share: share of the
    # minimal perturbation's energy below half-Nyquist (1 - hf_share; higher = lower-frequency)
    metric: Literal["correct", "rho", "low_freq_share"]

    @model_validator(mode="after")
    def _two_models(self) -> "ComparisonSpec":
        if self.a == self.b:
            raise ValueError(f"a and b are both {self.a!r}; a comparison needs two different models")
        return self


class Declared(BaseModel):
    """The last commit that changed the claim's definition (report/registration.py: title, kind, role,
    comparisons, family, margins, rules), its date, and which of those fields it changed; a test checks all
    three against git."""
    model_config = ConfigDict(extra="forbid")
    commit: str = Field(pattern=r"^[0-9a-f]{7,40}$")
    date: datetime  # the commit's date, with its time zone
    changed: list[Literal["new claim", "title", "kind", "role", "comparisons", "family", "margins", "rules"]] = []


class ClaimSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=300)
    kind: Literal["directional", "equivalence"]
    role: Literal["primary", "secondary", "exploratory"] = "primary"
    declared: Declared | None = None
    # the config (under configs/) whose cells answer the claim when not the set's: its attack labels are that
    # config's, and until those cells are in the store the claim is not evaluated (not a naming error)
    config: str | None = Field(None, min_length=1, max_length=200)
    comparisons: list[ComparisonSpec] = Field(min_length=1, max_length=20)


class MarginEvidence(BaseModel):
    """Where the report measures what justifies the margins: one model's seed-to-seed spread of clean
    accuracy, and DeepFool's looseness against the minimum-norm ensemble on that model."""
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=100)
    clean: str = Field(min_length=1, max_length=100)
    deepfool: str = Field(min_length=1, max_length=100)
    ensemble: str = Field(min_length=1, max_length=100)


class ClaimMargins(Margins):
    justification: str = Field(min_length=1, max_length=1000)
    evidence: MarginEvidence | None = None


class ClaimSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = Field(min_length=1, max_length=500)
    config: str = Field(min_length=1, max_length=200)
    margins: ClaimMargins | None = None  # default: verdict_rules.yaml's
    claims: list[ClaimSpec] = Field(min_length=1, max_length=100)
    name: str = ""  # the file's stem, set when loaded
    source: str = ""  # the file's path, set when loaded
    _data: Any = PrivateAttr(default=None)  # the parsed YAML, as loaded (hashed for pre-registration)

    def data(self) -> dict[str, Any]:
        """The YAML this set was loaded from (its model as data when it was built in code)."""
        if self._data is not None:
            return copy.deepcopy(self._data)
        return self.model_dump(mode="json", exclude={"name", "source"})


def claim_set_names() -> list[str]:
    """The claim sets shipped with the package (file stems), sorted."""
    return sorted(p.stem for p in CLAIM_SET_DIR.glob("*.yaml"))


def _one_line(err: ValidationError, path: Path) -> str:
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"{path}: {key}: {first['msg']}"


def load_claim_set(name_or_path: str | Path) -> ClaimSet:
    """A shipped claim set by name (see :func:`claim_set_names`), or any claim-set YAML file by path."""
    text = str(name_or_path)
    path = CLAIM_SET_DIR / f"{text}.yaml" if text in claim_set_names() else Path(text)
    if not path.is_file():
        raise ValueError(f"{short(text)}: claims: expected one of {', '.join(claim_set_names())} or a path to a "
                         "claim-set YAML file")
    _, data = read_yaml(path, "claim set")  # bounded, duplicate keys refused; errors name the file
    if not isinstance(data, dict):
        raise ValueError(f"{path}: (top level): expected a mapping with description, config and claims")
    try:
        claim_set = ClaimSet.model_validate(data)
    except ValidationError as err:
        raise ValueError(_one_line(err, path)) from None
    claim_set.name = path.stem
    claim_set.source = str(path)
    claim_set._data = data
    return claim_set
