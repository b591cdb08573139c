"""Every recipe composes through the real Hydra tree and builds its model."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from vocoders.features import MelConfig

CONF = Path(__file__).resolve().parents[1] / "conf"
RECIPES = sorted(p.stem for p in (CONF / "recipe").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def composed(*overrides):
    with initialize_config_module(config_module="vocoders.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes_and_builds(recipe):
    cfg = composed(f"recipe={recipe}")
    assert cfg.name == recipe
    mel = MelConfig.from_dict(dict(cfg.audio))
    if recipe != "demo":  # paper-sized models are built only in the tiny variant below
        assert cfg.trainer.max_steps >= 100_000
    tiny = composed(f"recipe={recipe}", "debug=tiny")
    model = instantiate(tiny.model, mel=mel.to_dict(), _convert_="all")
    assert model.hop_length == mel.hop_length
    assert sum(p.numel() for p in model.parameters()) < 200_000


@pytest.mark.parametrize("model", MODELS)
def test_every_model_has_a_tiny_variant(model):
    full = composed(f"model={model}")
    tiny = composed(f"model={model}", "debug=tiny")
    assert tiny.trainer.max_steps <= 10 and tiny.device == "cpu"
    assert (CONF / "debug_model" / f"{model}_tiny.yaml").is_file()
    assert full.model != tiny.model


def test_overrides_and_presets():
    cfg = composed("recipe=wavernn", "audio=24k", "model.hidden_size=512", "data.path=/x")
    assert cfg.audio.sample_rate == 24000 and cfg.model.hidden_size == 512 and cfg.data.path == "/x"
    assert MelConfig.from_dict(dict(cfg.audio)) == MelConfig.preset("24k")
    assert MelConfig.from_dict(dict(composed().audio)) == MelConfig.preset("hifigan")
