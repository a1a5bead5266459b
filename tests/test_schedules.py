"""Stage-3 schedules at their first, middle and last values."""

from __future__ import annotations

import pytest

from scenimefy.stages.schedules import hdce_gamma_schedule, lambda_sup_schedule, lr_factor


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(1, 1.0), (2, 0.997), (3, 0.988), (10, 0.760), (11, 0.707), (20, 0.078)],
)
def test_lambda_sup_follows_the_papers_cosine(epoch, expected):
    assert lambda_sup_schedule(epoch, 20) == pytest.approx(expected, abs=5e-4)


def test_lambda_sup_decays_strictly():
    values = [lambda_sup_schedule(t, 20) for t in range(1, 21)]
    assert all(a > b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("epoch", [0, 21, -1])
def test_lambda_sup_rejects_epochs_outside_1_to_T(epoch):
    with pytest.raises(ValueError, match="epoch must be in 1..20"):
        lambda_sup_schedule(epoch, 20)


@pytest.mark.parametrize(("epoch", "expected"), [(1, 48.0), (2, 46.0), (10, 30.0), (20, 10.0)])
def test_hdce_gamma_curriculum(epoch, expected):
    assert hdce_gamma_schedule(epoch, 20, gamma_start=50.0, gamma_end=10.0) == pytest.approx(expected)


def test_hdce_gamma_rejects_epoch_past_the_end():
    with pytest.raises(ValueError, match="epoch must be in 0..20"):
        hdce_gamma_schedule(21, 20, gamma_start=50.0, gamma_end=10.0)


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(1, 1.0), (10, 1.0), (11, 10 / 11), (15, 6 / 11), (20, 1 / 11), (21, 0.0), (30, 0.0)],
)
def test_lr_factor_is_cuts_linear_policy(epoch, expected):
    assert lr_factor(epoch, n_epochs=10, n_epochs_decay=10) == pytest.approx(expected)


def test_lr_factor_rejects_zero_based_epoch():
    with pytest.raises(ValueError, match="1-based"):
        lr_factor(0, n_epochs=10, n_epochs_decay=10)
