from __future__ import annotations

import json

import pytest

from amanuensis.models import resolve_model
from amanuensis.tokenizer import Tokenizer


@pytest.mark.parametrize(
    "name,multilingual,eot,sot,no_timestamps",
    [("tiny.en", False, 50256, 50257, 50362), ("base", True, 50257, 50258, 50363)],
)
def test_special_tokens_follow_the_vocabulary(
    name: str, multilingual: bool, eot: int, sot: int, no_timestamps: int
) -> None:
    files = resolve_model(name)
    tokenizer = Tokenizer(files.tokenizer_path, multilingual)
    assert (tokenizer.eot, tokenizer.sot, tokenizer.no_timestamps) == (eot, sot, no_timestamps)
    assert tokenizer.timestamp_begin == no_timestamps + 1
    config = json.loads(files.config_path.read_text())
    # Our non-speech list plus the control tokens is exactly the checkpoint's suppress list.
    controls = {
        tokenizer.sot,
        tokenizer.sot_prev,
        tokenizer.sot_lm,
        tokenizer.no_speech,
        tokenizer.transcribe,
        tokenizer.translate,
    }
    assert set(tokenizer.non_speech_tokens) | controls == set(config["suppress_ids"])
    text = " Whisper works offline, 42 times."
    assert tokenizer.decode(tokenizer.encode(text)) == text
    if multilingual:
        assert len(tokenizer.language_tokens) == 99
        assert tokenizer.sot_sequence("de", "translate") == [sot, tokenizer.language_token("de"), tokenizer.translate]
    else:
        assert tokenizer.sot_sequence(None, "transcribe") == [sot]
