import json
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from vocoders.checkpoint import (
    CheckpointError,
    load_training_state,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
    save_training_state,
)


def test_round_trip(tiny_checkpoint, tiny_model):
    ckpt = read_checkpoint(tiny_checkpoint)
    assert ckpt.model_name == tiny_model.name and ckpt.step == 7
    assert ckpt.model_kwargs == tiny_model.kwargs
    assert ckpt.mel == tiny_model.mel_config.to_dict()
    model = model_from_checkpoint(ckpt)
    assert type(model) is type(tiny_model)
    for name, value in tiny_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value)


def test_extras_and_ema_preference(tmp_path, tiny_wavernn):
    ema = {k: v + 1.0 for k, v in tiny_wavernn.state_dict().items()}
    path = save_checkpoint(tmp_path / "e.safetensors", tiny_wavernn, 1, extras={"ema": ema}, note="x")
    ckpt = read_checkpoint(path)
    assert ckpt.meta["note"] == "x" and set(ckpt.extras) == {"ema"}
    name = "gru_weight_hh"
    assert torch.equal(model_from_checkpoint(ckpt).state_dict()[name], ema[name])
    assert torch.equal(model_from_checkpoint(ckpt, use_ema=False).state_dict()[name], tiny_wavernn.state_dict()[name])


class Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickle_is_never_loaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="evil.safetensors"):
        read_checkpoint(evil)
    torch_file = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2), "boom": Boom()}, torch_file)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        read_checkpoint(torch_file)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "meta,match",
    [
        (None, "not a vocoders checkpoint"),
        ({"vocoders": "{not json"}, "corrupt"),
        ({"vocoders": json.dumps({"format": "other"})}, "does not describe"),
        (
            {"vocoders": json.dumps({"format": "vocoders-checkpoint", "format_version": 99, "model": "x", "mel": {}})},
            "newer",
        ),
        ({"vocoders": json.dumps({"format": "vocoders-checkpoint", "model": "nope", "mel": {}})}, None),
    ],
)
def test_foreign_safetensors_refused(tmp_path, meta, match):
    path = tmp_path / "f.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata=meta)
    if match is None:
        with pytest.raises(CheckpointError, match="unknown model"):
            model_from_checkpoint(read_checkpoint(path))
    else:
        with pytest.raises(CheckpointError, match=match):
            read_checkpoint(path)


def test_missing_file_and_mismatched_weights(tmp_path, tiny_wavernn):
    with pytest.raises(CheckpointError, match="no such"):
        read_checkpoint(tmp_path / "absent.safetensors")
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_wavernn, 0)
    ckpt = read_checkpoint(path)
    ckpt.meta["model_kwargs"]["hidden_size"] = 64
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_checkpoint(ckpt)


def test_training_state_round_trip_without_code(tmp_path):
    path = save_training_state(tmp_path / "s.state.pt", {"step": 3, "optimizer": {"x": torch.ones(2)}})
    assert load_training_state(path)["step"] == 3
    torch.save({"boom": Boom()}, tmp_path / "bad.state.pt")
    with pytest.raises(CheckpointError):
        load_training_state(tmp_path / "bad.state.pt")


def test_loading_imports_neither_hydra_nor_training(tiny_checkpoint):
    code = (
        "import sys, vocoders; v = vocoders.load(sys.argv[1]); "
        "bad = [m for m in sys.modules if m.startswith(('hydra', 'omegaconf', 'vocoders.training'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tiny_checkpoint)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_atomic_write_keeps_old_file_on_failure(tmp_path, tiny_wavernn, monkeypatch):
    path = save_checkpoint(tmp_path / "a.safetensors", tiny_wavernn, 1)
    before = path.read_bytes()
    import safetensors.torch

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", explode)
    with pytest.raises(OSError):
        save_checkpoint(path, tiny_wavernn, 2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


def test_parse_settings_reads_json_values_and_refuses_bare_names():
    from vocoders.checkpoint import parse_settings

    assert parse_settings(["voiced_temperature=0.7", "pitch_taps=3", "flag=true", "name=abc"]) == {
        "voiced_temperature": 0.7,
        "pitch_taps": 3,
        "flag": True,
        "name": "abc",
    }
    assert parse_settings(None) == {}
    for bad in ("voiced_temperature", "=1", "two words=1"):
        with pytest.raises(ValueError, match="NAME=VALUE"):
            parse_settings([bad])
