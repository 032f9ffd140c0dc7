"""The rater's accuracy check in notebook 02 is a real guard: below the preset's floor it stops with advice."""
import pytest

from rlhf_helpers.config import get_preset
from rlhf_helpers.rater import CLASSIFIER_ACCURACY_FLOORS, WeakRaterError, check_classifier_accuracy


def test_tiny_floor_stops_a_rater_at_chance_and_says_what_to_do():
    with pytest.raises(WeakRaterError) as err:
        check_classifier_accuracy(0.493, get_preset("tiny"))
    message = str(err.value)
    assert "49.3%" in message and "70%" in message and "rm -r" in message and "docs/tuning.md" in message


def test_good_raters_pass_and_the_value_comes_back():
    assert check_classifier_accuracy(0.86, "tiny") == 0.86
    assert check_classifier_accuracy(0.90, "gpt2") == 0.90
    assert CLASSIFIER_ACCURACY_FLOORS["tiny"] == pytest.approx(0.70)


def test_smoke_has_no_floor_but_nonsense_still_fails():
    assert check_classifier_accuracy(0.40, "smoke") == 0.40  # a few training steps: it only has to run
    with pytest.raises(ValueError, match="between 0 and 1"):
        check_classifier_accuracy(1.5, "smoke")
