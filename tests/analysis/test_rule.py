"""The qualification rule's signals: the parameter model and the rule name the same ones."""
from typing import get_args

import pytest

from quarterpanic.analysis import rule
from quarterpanic.errors import ParameterError
from quarterpanic.params import QualificationSignal, load_params


def test_the_parameter_model_accepts_exactly_the_rules_signals():
    assert get_args(QualificationSignal) == rule.SIGNALS


def test_a_pinned_signal_the_rule_does_not_know_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("qualification_rule: {signals: [bant, gut_feeling]}\n")
    with pytest.raises(ParameterError, match="p.yaml"):
        load_params([path])
