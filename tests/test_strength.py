"""The mutation check (issue #17): each criterion's and attribution method's cross-check fails for
broken versions of it — a constant, a shuffled output, a dropped term (:mod:`tests.mutants`).

For every registered criterion (per-unit and class-wise) and attribution method: its cross-check
passes on the real method, kills every "return a constant" mutant and at least one mutant in all;
and ``benchmarks/results/test_strength.json`` (written by ``make test-strength``) records the same
outcome for every mutant, so the committed table cannot drift from what the tests can do.
"""

import json
from pathlib import Path

import pytest

from neurotomy.explain import METHODS
from neurotomy.scores import CRITERIA
from tests.mutants import CONSTANT, run_subject, subjects

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "test_strength.json"
SUBJECTS = subjects()


def subject_id(subject) -> str:
    family = subject.family.removeprefix("criterion (").rstrip(")")  # unit, class or attribution
    return f"{family}:{subject.method}"


def test_every_registered_method_has_a_cross_check_and_mutants():
    registered = ({("criterion (unit)", n) for n in CRITERIA.names(axis="unit")}
                  | {("criterion (class)", n) for n in CRITERIA.names(axis="class")}
                  | {("attribution", n) for n in METHODS.names()})
    covered = {(s.family, s.method) for s in SUBJECTS}
    assert covered == registered, f"add the missing ones to tests/mutants.py: {sorted(registered - covered)}"
    assert all(any(m.kind == CONSTANT for m in s.mutants) for s in SUBJECTS)


@pytest.mark.parametrize("subject", SUBJECTS, ids=subject_id)
def test_cross_check_kills_the_mutants(subject):
    records = run_subject(subject)
    surviving_constants = [r["mutant"] for r in records if r["kind"] == CONSTANT and not r["killed"]]
    assert not surviving_constants, f"the cross-check of {subject.method} passes for {surviving_constants}"
    assert any(r["killed"] for r in records)
    committed = [r for r in json.loads(RESULTS.read_text())["records"]
                 if (r["family"], r["method"]) == (subject.family, subject.method)]
    outcome = {r["mutant"]: r["killed"] for r in records}
    assert outcome == {r["mutant"]: r["killed"] for r in committed}, \
        f"{RESULTS.name} is out of date for {subject_id(subject)}: run `make test-strength`"
