"""Profiles say what they change: the header of every experiment lists each setting it changes
from paper.yaml, and that list is checked against the two files themselves."""

import pytest

from mmsearch.config import REFERENCE, available_experiments, declared_deviations, deviations, experiment_path


@pytest.mark.parametrize("experiment", [e for e in available_experiments() if e != REFERENCE])
def test_the_header_lists_every_deviation_from_the_paper_and_nothing_else(experiment: str) -> None:
    declared = {d.key: (d.paper, d.value) for d in declared_deviations(experiment)}
    actual = {d.key: (d.paper, d.value) for d in deviations(experiment)}
    assert declared == actual
    assert all(d.reason for d in declared_deviations(experiment)), "every deviation says why"


def test_every_interpretation_of_the_paper_is_marked_open() -> None:
    text = experiment_path(REFERENCE).read_text()
    opened = [line for line in text.splitlines() if "open:" in line]
    for choice in ("image_size", "split_seed", "pretrained", "scale=(0.5, 1)", "pooling", "step_size=1",
                   "15 weights", "tune_thresholds", "standardised", "random ones", "test captions"):
        assert any(choice in line for line in opened), choice
    assert "open" not in next(line for line in text.splitlines() if "leaky_slope" in line)  # stated in 3.7.2
    for s4 in ("lr: 1.0e-4", "epochs: 100", "batch_size: 250", "lr: 0.02 ", "batch_size: 1000", "dropout_p", "hidden_size: 2000"):
        assert "s4:" in next(line for line in text.splitlines() if s4 in line), s4
