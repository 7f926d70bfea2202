"""The one config.json reader: local folders, resolved models and the embedded GGUF-backed alias,
and every unreadable file as a ModelError naming it."""

from __future__ import annotations

import json

import pytest

from tuneforge.runner.errors import ModelError
from tuneforge.runner.model import resolve
from tuneforge.runner.model_config import read_config, text_config


def test_reads_folders_resolved_models_and_the_embedded_alias(tiny_model_dir, smollm2_dir):
    cfg = read_config(tiny_model_dir)
    assert cfg["hidden_size"] == 64 and cfg["num_hidden_layers"] == 2
    assert read_config(resolve(str(tiny_model_dir))) == cfg
    assert read_config("smollm2-135m") == json.loads((smollm2_dir / "config.json").read_text())


def test_multimodal_configs_give_their_text_part():
    assert text_config({"model_type": "x", "text_config": {"hidden_size": 8}}) == {"hidden_size": 8}
    assert text_config({"hidden_size": 8}) == {"hidden_size": 8}


@pytest.mark.parametrize("content, message", [
    (None, "has no config.json"),
    (b"{not json", "cannot be read"),
    (b"\xff\xfe{}", "cannot be read"),
    (b"[1, 2]", "holds a list, not a model configuration"),
])
def test_unreadable_configs_are_model_errors(tmp_path, content, message):
    if content is not None:
        (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(ModelError, match=message):
        read_config(tmp_path)


def test_a_byte_order_mark_is_accepted(tmp_path):
    (tmp_path / "config.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"hidden_size": 8}).encode())
    assert read_config(tmp_path) == {"hidden_size": 8}
