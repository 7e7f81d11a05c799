"""Damaged checkpoints and unwritable run folders: one clear error, found before any work."""
import errno
import os

import pytest
import torch

from pillargraph import io
from pillargraph.io import OutputError
from pillargraph.train import CHECKPOINT_FORMAT, Trainer, load_checkpoint, model_from_checkpoint

from ..helpers.tiny import tiny_builder, tiny_config, tiny_model


def checkpoint_state():
    builder = tiny_builder()
    model = tiny_model(builder)
    return {"format": CHECKPOINT_FORMAT, "model_config": model.to_config(),
            "builder_config": builder.config, "model": model.state_dict(), "fusion": None}


def first_weight(state):
    return next(iter(state["model"]))


def wrong_shape(state):
    state["model"][first_weight(state)] = torch.zeros(3, 3)


def missing_weight(state):
    del state["model"][first_weight(state)]


def extra_weight(state):
    state["model"]["nets.i2t.spare"] = torch.zeros(1)


def no_builder_config(state):
    del state["builder_config"]


def builder_config_not_a_dict(state):
    state["builder_config"] = "hello"


def unknown_builder_option(state):
    state["builder_config"] = dict(state["builder_config"], colour="red")


def builder_features_do_not_fit(state):
    state["builder_config"] = dict(state["builder_config"], num_pillars=5)


def no_model_config(state):
    del state["model_config"]


def model_config_does_not_fit(state):
    state["model_config"] = dict(state["model_config"], hidden_channels=8)


@pytest.mark.parametrize("damage, message", [
    (wrong_shape, "weights do not fit the model \\(.* has shape \\[3, 3\\], the model needs"),
    (missing_weight, "weights do not fit the model \\(missing"),
    (extra_weight, "weights do not fit the model \\(unexpected 'nets.i2t.spare'"),
    (no_builder_config, "'builder_config' is missing"),
    (builder_config_not_a_dict, "'builder_config' is missing or not a dict"),
    (unknown_builder_option, "invalid config"),
    (builder_features_do_not_fit, "the builder makes 10 features but the model reads 16"),
    (no_model_config, "'model_config' is missing"),
    (model_config_does_not_fit, "weights do not fit the model .*; \\d+ more"),
])
def test_damaged_checkpoint_is_one_clear_value_error(tmp_path, damage, message):
    state = checkpoint_state()
    damage(state)
    path = tmp_path / "best.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=f"damaged checkpoint.*{message}") as exc:
        model_from_checkpoint(path)
    assert str(exc.value).startswith(f"{path}: ") and "\n" not in str(exc.value)


def test_intact_checkpoint_loads(tmp_path):
    state = checkpoint_state()
    torch.save(state, tmp_path / "best.pt")
    model = model_from_checkpoint(tmp_path / "best.pt")
    assert model.builder_config == state["builder_config"] and not model.training


def test_bad_device_is_blamed_before_the_file_is_read(tmp_path):
    torch.save(checkpoint_state(), tmp_path / "best.pt")
    with pytest.raises(ValueError, match="^device: unknown device 'banana'"):
        model_from_checkpoint(tmp_path / "best.pt", map_location="banana")
    with pytest.raises(ValueError, match="^device: unknown device"):
        load_checkpoint(tmp_path / "missing.pt", map_location="banana")


def test_folder_instead_of_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="is a folder; pass the checkpoint file"):
        load_checkpoint(tmp_path)


def test_unwritable_run_folder_fails_before_any_work(tiny_splits, tmp_path, monkeypatch):
    train, dev, _ = tiny_splits
    builder = tiny_builder()
    trainer = Trainer(tiny_model(builder), builder, tiny_config(epochs=1), out_dir=tmp_path / "run")

    def no_work(*args, **kwargs):
        raise AssertionError("work was spent before the run folder was checked")

    def denied(*args, **kwargs):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))
    monkeypatch.setattr(trainer, "prepare", no_work)
    monkeypatch.setattr(io.tempfile, "mkstemp", denied)
    with pytest.raises(OutputError, match=r"cannot write .*run: Permission denied"):
        trainer.fit(train, dev)
