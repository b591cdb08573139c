"""tools/ship_pretrained.py: the steps a shipped model's card counts behind its weights."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from ship_pretrained import steps_before  # noqa: E402

from vocoders.checkpoint import save_checkpoint  # noqa: E402


def test_steps_before_follows_the_init_from_chain(tmp_path, tiny_wavernn):
    first = save_checkpoint(tmp_path / "first.safetensors", tiny_wavernn, 3500)
    second = save_checkpoint(
        tmp_path / "second.safetensors", tiny_wavernn, 1000, init_from={"path": str(first), "step": 3500}
    )
    assert steps_before({"path": str(second), "step": 1000}) == 4500  # a source without its total
    assert steps_before({"path": str(second), "step": 1000, "total_steps": 1200}) == 1200  # recorded totals win
    assert steps_before({"path": str(tmp_path / "gone.safetensors"), "step": 7}) == 7  # the file is not at hand
    assert steps_before({}) == 0


def test_the_card_states_a_pitch_refit_and_nothing_without_one():
    from ship_pretrained import pitch_refit_lines

    assert pitch_refit_lines(None) == []
    side = {"within_50_cents": 0.7, "octave_errors": 0.0146, "vuv_agreement": 0.7137}
    record = {"period_input": "features+mel", "epochs": 4, "train_frames": 149326, "valid_frames": 9179,
              "valid_before": side, "valid_after": {**side, "vuv_agreement": 0.8262}}  # fmt: skip
    (line,) = pitch_refit_lines(record)
    assert "--input features+mel --epochs 4" in line and "149,326" in line and "71.4% -> 82.6%" in line


def test_a_shipped_model_records_its_total_and_no_chain_to_count_twice(tmp_path, tiny_wavernn):
    from ship_pretrained import steps_before

    from vocoders.checkpoint import total_steps

    first = save_checkpoint(tmp_path / "first.safetensors", tiny_wavernn, 3500)
    run = {"step": 1000, "init_from": {"path": str(first), "step": 3500, "total_steps": 3500}}
    assert total_steps(run, steps_before) == 4500
    assert (
        total_steps({"step": 4500, "total_steps": 4500, "init_from": {"step": 1000}}, steps_before) == 4500
    )  # shipped
