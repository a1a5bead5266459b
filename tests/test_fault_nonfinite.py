"""A loss that becomes NaN or infinite stops the run with one line naming the step and the terms,
and no checkpoint is written with non-finite weights: the last good one is kept."""

import re

import pytest
import torch
from stage_recorder import TINY_TRANSLATOR, MemoryTracker, Recorder, random_translator_sources

from scenimefy.config import load_config
from scenimefy.stages import translator as translator_stage
from scenimefy.stages.context import NonFiniteLoss
from scenimefy.stages.translator import train_translator

TRANSLATOR = TINY_TRANSLATOR


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _nan_src_from_step(monkeypatch, first_bad_step: int, resumed_at: int = 0) -> None:
    """L_SRC becomes NaN at `first_bad_step` (the loss is computed once per step)."""
    real = translator_stage.src_loss_layers
    calls = {"n": resumed_at}

    def src(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] >= first_bad_step else loss

    monkeypatch.setattr(translator_stage, "src_loss_layers", src)


def _all_finite(checkpoint_dir) -> bool:
    state = torch.load(f"{checkpoint_dir}/state.pt", weights_only=True)
    return all(
        bool(torch.isfinite(v).all()) for m in state["models"].values() for v in m.values() if v.is_floating_point()
    )


def test_a_nan_loss_stops_at_its_step_naming_the_term_and_keeps_the_last_good_checkpoint(monkeypatch):
    _nan_src_from_step(monkeypatch, 3)
    rec, tracker = Recorder(), MemoryTracker()
    with pytest.raises(NonFiniteLoss) as failed:
        train_translator(load_config(None, TRANSLATOR), random_translator_sources(), 2, rec.context(tracker))
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("translator: non-finite loss at step 3 (epoch 2): ")
    assert "loss_src=nan" in message and "loss_G=nan" in message and "loss_D_U" not in message
    assert "the last good checkpoint is step 2" in message and "lower translator.lr" in message
    assert isinstance(failed.value, ValueError)  # a user error: the CLI prints it as one line
    # checkpoints after steps 1 and 2 only, both finite; nothing of step 3 was logged
    steps = [torch.load(f"{d}/state.pt", weights_only=True)["progress"]["step"] for d in rec.checkpoints]
    assert steps == [1, 2] and all(_all_finite(d) for d in rec.checkpoints)
    assert max(step for step, _ in tracker.metrics) == 2


def test_a_nan_after_resuming_names_the_checkpoint_resumed_from(monkeypatch):
    first = Recorder()
    train_translator(
        load_config(None, [*TRANSLATOR, "translator.max_steps=2"]), random_translator_sources(), 2, first.context()
    )
    _nan_src_from_step(monkeypatch, 3, resumed_at=2)
    again = Recorder(resume_from=first.checkpoints[-1])
    with pytest.raises(
        NonFiniteLoss, match=re.escape(f"the last good checkpoint is step 2 at {first.checkpoints[-1]}")
    ):
        train_translator(load_config(None, TRANSLATOR), random_translator_sources(), 2, again.context())
    assert again.checkpoints == []


def test_a_nan_at_the_first_step_says_no_checkpoint_was_written(monkeypatch):
    _nan_src_from_step(monkeypatch, 1)
    rec = Recorder()
    with pytest.raises(NonFiniteLoss, match=r"at step 1 \(epoch 1\): .*no checkpoint was written before it"):
        train_translator(load_config(None, TRANSLATOR), random_translator_sources(), 2, rec.context())
    assert rec.checkpoints == []


def test_a_diverging_learning_rate_stops_at_once_without_a_checkpoint():
    """No patch: lr = 1e30 sends D's weights to ~1e30 in its first Adam step, so G's adversarial
    losses of that same step overflow; the step's checkpoint is not written."""
    rec = Recorder()
    with pytest.raises(NonFiniteLoss, match=r"^translator: non-finite loss at step 1 \(epoch 1\): loss_G=nan, "):
        train_translator(
            load_config(None, [*TRANSLATOR, "translator.lr=1e30"]), random_translator_sources(), 2, rec.context()
        )
    assert rec.checkpoints == [] and rec.reports == []
