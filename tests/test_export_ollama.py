"""The Ollama Modelfile's TEMPLATE: the run's Jinja chat template translated to Go-template syntax.

Check used: the translated template is executed by runner.export_gotemplate (a renderer of the Go
text/template subset Ollama's templates use, itself tested here on Go's documented semantics) and
must give the same text as the Jinja template, rendered by the run's tokenizer, for the six template
families the data layer proves (tests/test_data_masks.py) and the built-in templates.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from test_data_masks import CONTROL, TEMPLATES
from tuneforge.runner import export_gotemplate as go
from tuneforge.runner import export_ollama
from tuneforge.runner.errors import TuneforgeError
from tuneforge.runner.export_gguf import adds_bos

BUILTIN = Path(__file__).resolve().parents[1] / "runner" / "templates"
TWO_TURNS = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"},
             {"role": "assistant", "content": "2 + 2 = 4."}, {"role": "user", "content": "And 3+3? Answer in a sentence."}]


def _tok(smollm2_dir, family):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    if CONTROL.get(family):
        tok.add_special_tokens({"additional_special_tokens": CONTROL[family]})
    return tok


# family of the data layer's proofs -> the Go family it must translate to, and the probes it accepts
SIX = {"smollm2": ("chatml", 3), "llama3": ("llama3", 3), "mistral": ("mistral", 1), "gemma": ("gemma", 1),
       "phi3": ("phi3", 3), "qwen3": ("qwen3", 3)}


@pytest.mark.parametrize("family", list(SIX))
def test_six_families_render_a_two_turn_conversation_identically(smollm2_dir, family):
    tok = _tok(smollm2_dir, family)
    template = tok.chat_template if family == "smollm2" else (TEMPLATES / f"{family}.jinja").read_text()
    tr = export_ollama.translate(tok, template, adds_bos(tok))
    assert (tr.family, len(tr.checked)) == SIX[family]
    conversation = TWO_TURNS if family not in ("mistral", "gemma") else TWO_TURNS[1:]  # these refuse a system turn
    want = export_ollama.jinja_render(tok, template, conversation)
    assert want and export_ollama.go_render(tr.template, conversation, tr.system) == want
    assert "2 + 2 = 4." in want and want.count("What is 2+2?") == 1


def test_smollm2s_built_in_system_prompt_becomes_the_modelfile_system(smollm2_dir):
    tok = _tok(smollm2_dir, "smollm2")
    tr = export_ollama.translate(tok, tok.chat_template, adds_bos(tok))
    assert tr.system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    text = export_ollama.modelfile("m.gguf", tr, 2048)
    assert f'SYSTEM """{tr.system}"""' in text and 'PARAMETER stop "<|im_end|>"' in text
    # Without the SYSTEM line Ollama would render no system turn, unlike the Jinja template.
    no_system = TWO_TURNS[1:]
    assert export_ollama.go_render(tr.template, no_system) != export_ollama.jinja_render(tok, tok.chat_template, no_system)


def test_tool_turns_render_like_qwen3s_template(smollm2_dir):
    tok = _tok(smollm2_dir, "qwen3")
    template = (TEMPLATES / "qwen3.jinja").read_text()
    tr = export_ollama.translate(tok, template, adds_bos(tok))
    call = {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}
    conversation = [{"role": "user", "content": "Weather in Paris and Rome?"},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [call, {**call, "arguments": {"city": "Rome"}}]},
                    {"role": "tool", "content": "21"}, {"role": "tool", "content": "25"},
                    {"role": "assistant", "content": "21 and 25."}, {"role": "user", "content": "Thanks"}]
    rendered = export_ollama.go_render(tr.template, conversation)
    assert rendered == export_ollama.jinja_render(tok, template, conversation)
    assert rendered.count("<tool_response>") == 2 and rendered.count("<|im_start|>user\n<tool_response>") == 1


@pytest.mark.parametrize("name,family", [("alpaca", "alpaca"), ("chatml", "chatml"), ("llama3", "llama3"), ("plain", "plain")])
def test_built_in_templates_translate(smollm2_dir, name, family):
    tok = _tok(smollm2_dir, name)
    tr = export_ollama.translate(tok, (BUILTIN / f"{name}.jinja").read_text(), adds_bos(tok))
    assert tr.family == family and len(tr.checked) == 3


def test_an_unknown_template_is_refused_not_guessed(smollm2_dir):
    tok = _tok(smollm2_dir, "smollm2")
    odd = "{% for m in messages %}<<{{ m['role'] }}>> {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(TuneforgeError, match="not one of the families") as e:
        export_ollama.translate(tok, odd, False)
    assert "--format gguf" in e.value.fix


# The renderer itself, on text/template's documented behaviour.

@pytest.mark.parametrize("template,data,want", [
    ("a  {{- .X -}}  b", {"X": 1}, "a1b"),  # trim markers eat all whitespace on their side
    ("a {{ .X }} b", {"X": "x"}, "a x b"),
    ('{{ if eq .R "u" "v" }}yes{{ else }}no{{ end }}', {"R": "v"}, "yes"),  # eq with several: any
    ('{{ if .A }}a{{ else if .B }}b{{ else }}c{{ end }}', {"A": "", "B": [1]}, "b"),
    ("{{ range $i, $m := .L }}{{ $i }}={{ $m.N }};{{ end }}", {"L": [{"N": "x"}, {"N": "y"}]}, "0=x;1=y;"),
    ("{{ range .L }}{{ . }}{{ $.S }}{{ end }}", {"L": [1, 2], "S": "-"}, "1-2-"),
    ("{{ $n := 0 }}{{ range .L }}{{ $n = . }}{{ end }}{{ $n }}", {"L": [3, 4]}, "4"),  # = assigns the outer variable
    ("{{ len (slice .L 1) }}", {"L": [1, 2, 3]}, "2"),
    ("{{ (index .L 1).N }}", {"L": [{"N": "a"}, {"N": "b"}]}, "b"),
    ("{{ or .E (index .L 5) }}", {"E": "set", "L": []}, "set"),  # or stops at the first true value
    ("{{ json .M }}", {"M": {"b": 1, "a": "x y"}}, '{"a":"x y","b":1}'),  # encoding/json: compact, sorted keys
    ("{{ not .T }}{{ .T }}", {"T": False}, "truefalse"),
    ("{{/* a comment */}}x", {}, "x"),
])
def test_go_template_semantics(template, data, want):
    assert go.render(template, data) == want


@pytest.mark.parametrize("template", ["{{ if .X }}open", "{{ with .X }}{{ end }}", "{{ nosuch .X }}", "{{ .Missing }}"])
def test_go_template_errors_are_errors(template):
    with pytest.raises(go.GoTemplateError):
        go.render(template, {"X": 1})
