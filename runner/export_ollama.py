"""An Ollama Modelfile for an exported GGUF: the run's chat template in Go-template syntax.

Jinja and Go templates are different languages, so a general translator would be a compiler. The
chat templates real models use fall into a few families; each has a hand-written Go template here,
and the translation of a run's template is the family whose Go template renders the same text as
the Jinja one on every probe conversation (system + two turns, no system, a tool call and its result),
executed by runner.export_gotemplate. A template that matches no family is refused with a message,
never guessed. Ollama specifics the renderer imitates: the Modelfile SYSTEM is put in front of a
conversation that has none, and the runtime adds BOS itself when the GGUF says `add_bos_token`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import export_gotemplate as gotmpl
from .errors import TuneforgeError

_LAST = "{{- $last := eq (len (slice $.Messages $i)) 1 }}"
_GEN = '{{ if and $last (ne .Role "assistant") }}%s{{ end }}'

FAMILIES: dict[str, str] = {
    "chatml": ("{{- range $i, $_ := .Messages }}" + _LAST + "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
               + _GEN % "<|im_start|>assistant\n" + "{{ end }}"),
    "qwen3": ("{{- $prevTool := false }}{{- range $i, $_ := .Messages }}" + _LAST
              + "{{- $rest := slice $.Messages $i }}{{- $content := .Content }}"
              '{{- if eq .Role "tool" }}{{ if not $prevTool }}<|im_start|>user{{ end }}\n<tool_response>\n{{ .Content }}\n</tool_response>'
              '{{ if or $last (ne (index $rest 1).Role "tool") }}<|im_end|>\n{{ end }}'
              '{{- else }}<|im_start|>{{ .Role }}\n{{ .Content }}'
              '{{- range $j, $call := .ToolCalls }}{{ if or $j $content }}\n{{ end }}<tool_call>\n{"name": "{{ .Function.Name }}", '
              '"arguments": {{ json .Function.Arguments }}}\n</tool_call>{{ end }}<|im_end|>\n{{ end }}'
              + _GEN % "<|im_start|>assistant\n" + '{{- $prevTool = eq .Role "tool" }}{{ end }}'),
    "llama3": ("@BOS@{{- range $i, $_ := .Messages }}" + _LAST
               + "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
               + _GEN % "<|start_header_id|>assistant<|end_header_id|>\n\n" + "{{ end }}"),
    "gemma": ("@BOS@{{- range $i, $_ := .Messages }}" + _LAST
              + '<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}{{ .Role }}{{ end }}\n{{ .Content }}<end_of_turn>\n'
              + _GEN % "<start_of_turn>model\n" + "{{ end }}"),
    "mistral": ('@BOS@{{- range .Messages }}{{ if eq .Role "user" }}[INST] {{ .Content }} [/INST]'
                '{{ else if eq .Role "assistant" }}{{ .Content }}@EOS@{{ end }}{{ end }}'),
    "phi3": ("{{- range $i, $_ := .Messages }}" + _LAST
             + '{{- if eq .Role "system" "user" "assistant" }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}'
             + _GEN % "<|assistant|>\n" + "{{ end }}"),
    "alpaca": ('{{- range $i, $_ := .Messages }}' + _LAST + '{{- if eq .Role "system" }}{{ .Content }}\n\n'
               '{{ else if eq .Role "user" }}### Instruction:\n{{ .Content }}\n\n'
               '{{ else if eq .Role "assistant" }}### Response:\n{{ .Content }}@EOS@\n\n{{ end }}'
               + _GEN % "### Response:\n" + "{{ end }}"),
    "plain": ('{{- range .Messages }}{{ if eq .Role "assistant" }}{{ .Content }}@EOS@\n{{ else }}{{ .Content }}\n{{ end }}{{ end }}'),
}
STOPS = {"chatml": ["<|im_end|>"], "qwen3": ["<|im_end|>"], "llama3": ["<|eot_id|>"], "gemma": ["<end_of_turn>"],
         "mistral": [], "phi3": ["<|end|>"], "alpaca": ["### Instruction:"], "plain": []}

_CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}
PROBES: list[list[dict]] = [
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "2 + 2 = 4."}, {"role": "user", "content": "And 3+3? Answer in a sentence."}],
    [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": "", "tool_calls": [_CALL]},
     {"role": "tool", "content": '{"temp_c": 21}'}],
]


@dataclass
class Translation:
    family: str
    template: str  # Go template for the Modelfile's TEMPLATE
    system: str | None  # the template's built-in default system prompt, as the Modelfile's SYSTEM
    stops: list[str]
    checked: list[str] = field(default_factory=list)  # the probes that rendered identically


def jinja_render(tok, template: str, messages: list[dict]) -> str | None:
    """The run's template on `messages` the way training rendered it; None where the template refuses them."""
    hf = [dict(m, tool_calls=[{"type": "function", "function": {**c, "arguments": gotmpl.go_json(c["arguments"])}}
                              for c in m["tool_calls"]]) if m.get("tool_calls") else m for m in messages]
    try:
        return tok.apply_chat_template(hf, chat_template=template, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - jinja's raise_exception: e.g. no system role, roles must alternate
        return None


def go_render(go_template: str, messages: list[dict], system: str | None = None) -> str:
    """What Ollama renders for `messages` (its SYSTEM is put first when the conversation has none)."""
    if system is not None and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system}, *messages]
    msgs = []
    for m in messages:
        calls = [{"Function": {"Name": c["name"], "Arguments": c["arguments"]}} for c in m.get("tool_calls") or []]
        msgs.append({"Role": m["role"], "Content": m["content"], "ToolCalls": calls})
    return gotmpl.render(go_template, {"Messages": msgs, "System": system or "", "Tools": []})


def translate(tok, template: str, adds_bos: bool) -> Translation:
    """The family whose Go template renders like `template` on every probe it accepts."""
    bos, eos = tok.bos_token or "", tok.eos_token or ""
    lead = bos if adds_bos else ""  # the runtime writes BOS in front; the Go template must not
    no_system = jinja_render(tok, template, PROBES[1][:1]) or ""
    from .data.tool_format import format_of

    # A template wrapped with a tuneforge tool format (data.tool_format) writes tool turns its own way,
    # which no Ollama family does: the Modelfile is checked on the conversations without tools, and
    # Ollama renders tool turns in the family's own form (docs/export.md).
    probes = [p for p in PROBES if not any(m.get("tool_calls") or m["role"] == "tool" for m in p)] \
        if format_of(template) else PROBES
    tried = []
    for family, go in FAMILIES.items():
        go = go.replace("@BOS@", "" if adds_bos else bos).replace("@EOS@", eos)
        system = _default_system(family, no_system, lead)
        checked, ok = [], True
        for n, probe in enumerate(probes):
            want = jinja_render(tok, template, probe)
            if want is None:
                continue
            try:
                got = lead + go_render(go, probe, system)
            except gotmpl.GoTemplateError:
                ok = False
                break
            if got != want:
                ok = False
                break
            checked.append(f"probe {n + 1}")
        if ok and checked:
            return Translation(family, go, system, _stops(family, eos), checked)
        tried.append(family)
    raise TuneforgeError(
        "the run's chat template is not one of the families the Ollama export translates "
        f"({', '.join(tried)}), so no Modelfile TEMPLATE can be checked against it",
        "export --format gguf (llama.cpp and LM Studio read the template from the GGUF) and write the "
        "Modelfile's TEMPLATE by hand (https://github.com/ollama/ollama/blob/main/docs/template.md)")


def _default_system(family: str, rendered: str, lead: str) -> str | None:
    """A built-in system prompt (SmolLM2's) the template writes when a conversation has none."""
    text = rendered[len(lead):] if rendered.startswith(lead) else rendered
    if family in ("chatml", "qwen3") and text.startswith("<|im_start|>system\n"):
        return text[len("<|im_start|>system\n"):].split("<|im_end|>", 1)[0]
    return None


def _stops(family: str, eos: str) -> list[str]:
    return list(dict.fromkeys([*STOPS[family], *([eos] if eos else [])]))


def modelfile(gguf_name: str, tr: Translation, context: int) -> str:
    """The Modelfile text. Sampling defaults are tuneforge chat's: greedy, so replies match `tuneforge chat`."""
    for text in (tr.template, tr.system or ""):
        if '"""' in text:
            raise TuneforgeError('the chat template contains """, which a Modelfile cannot quote', "write the Modelfile by hand")
    lines = [f"# written by tuneforge export: template family '{tr.family}', checked by rendering "
             f"({', '.join(tr.checked)}) against the run's Jinja template",
             f"FROM ./{gguf_name}", f'TEMPLATE """{tr.template}"""']
    if tr.system is not None:
        lines.append(f'SYSTEM """{tr.system}"""')
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in tr.stops]
    lines += ["PARAMETER temperature 0", f"PARAMETER num_ctx {context}"]
    return "\n".join(lines) + "\n"
