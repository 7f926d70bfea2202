"""Write a merged llama-family Hugging Face folder as one GGUF file (llama.cpp, Ollama, LM Studio).

Why gguf-py's GGUFWriter and not llama.cpp's `convert_hf_to_gguf.py`: the converter is not on PyPI
(it lives in the llama.cpp source tree and pins an older transformers than ours), while the `gguf`
package it is built on is. For the llama architecture the converter does four things we repeat here
with the same package: map tensor names (`gguf.get_tensor_name_map`), permute the q/k projections
into llama.cpp's rotary layout, write the hyperparameters and the tokenizer metadata
(`tokenizer.ggml.*`, `tokenizer.chat_template`), and round the weights (`gguf.quants`: f16, bf16 and
q8_0 in numpy). k-quants need llama.cpp's compiled `llama-quantize`, run on our f16 file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from .errors import TuneforgeError

NATIVE_QUANTS = ("f32", "f16", "bf16", "q8_0")  # written here, numpy only
LLAMA_QUANTIZE_TYPES = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_0", "q4_1", "q4_k_s", "q4_k_m", "q5_0", "q5_1",
                        "q5_k_s", "q5_k_m", "q6_k")  # through llama-quantize
QUANTS = NATIVE_QUANTS + LLAMA_QUANTIZE_TYPES
# Hugging Face architectures llama.cpp runs as `llama` (convert_hf_to_gguf.py registers them on LlamaModel).
LLAMA_FAMILY = ("LlamaForCausalLM", "MistralForCausalLM")
GET_LLAMA_CPP = ("build llama.cpp (https://github.com/ggml-org/llama.cpp: cmake -B build && cmake --build build "
                 "--target llama-quantize) and put build/bin on PATH, or install a package that ships it "
                 "(e.g. `brew install llama.cpp`); or export --quant q8_0, which needs no compiled tools")


def check_quant(quant: str) -> str:
    q = quant.lower()
    if q not in QUANTS:
        raise TuneforgeError(f"--quant '{quant}' is not one of {', '.join(QUANTS)}",
                             "use --quant q8_0 (a quarter of fp32, nearly lossless) or f16")
    return q


def llama_quantize() -> str:
    """The llama-quantize program, or a TuneforgeError saying how to get it."""
    found = shutil.which("llama-quantize") or shutil.which("quantize")
    if not found:
        raise TuneforgeError("k-quants (q4_k_m, q5_k_m, ...) are made by llama.cpp's `llama-quantize`, which is not on PATH",
                             GET_LLAMA_CPP)
    return found


def write(model_dir: Path, out_file: Path, quant: str, chat_template: str | None, name: str,
          say: Callable[[str], None] = lambda text: None) -> Path:
    """`model_dir` (a merged HF folder) as `out_file` in `quant`; k-quants go through an f16 file."""
    quant = check_quant(quant)
    if quant in NATIVE_QUANTS:
        _write_native(model_dir, out_file, quant, chat_template, name)
        return out_file
    tool = llama_quantize()
    f16 = out_file.with_name(out_file.stem + ".f16-tmp.gguf")
    try:
        _write_native(model_dir, f16, "f16", chat_template, name)
        say(f"quantizing to {quant} with {tool} ...")
        done = subprocess.run([tool, str(f16), str(out_file), quant.upper()], capture_output=True, text=True)
        if done.returncode != 0:
            raise TuneforgeError(f"llama-quantize failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}",
                                 "check that your llama.cpp build is recent, or use --quant q8_0")
    finally:
        f16.unlink(missing_ok=True)
    return out_file


def check_config(model_dir: Path) -> dict:
    """The model's config.json, or a TuneforgeError naming what this writer cannot convert."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch = (config.get("architectures") or ["?"])[0]
    if arch not in LLAMA_FAMILY:
        raise TuneforgeError(
            f"GGUF export supports the llama family ({', '.join(LLAMA_FAMILY)}); this model is {arch}",
            "export the merged model (tuneforge export RUN --out DIR --merge --dtype fp16) and convert it with "
            "llama.cpp's convert_hf_to_gguf.py, which knows more architectures")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise TuneforgeError(f"rope scaling '{rope.get('rope_type') or rope.get('type')}' is not written by the GGUF exporter",
                             "convert the merged export with llama.cpp's convert_hf_to_gguf.py")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise TuneforgeError("llama models with attention/MLP biases are not written by the GGUF exporter",
                             "convert the merged export with llama.cpp's convert_hf_to_gguf.py")
    return config


def _permute(w, n_head: int):
    """HF's rotary half-split layout -> llama.cpp's interleaved one (convert_hf_to_gguf LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_native(model_dir: Path, out_file: Path, quant: str, chat_template: str | None, name: str) -> None:
    import gguf
    import numpy as np
    from safetensors import safe_open

    config = check_config(model_dir)
    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    n_layers = config["num_hidden_layers"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    rope = config.get("rope_parameters") or {}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant]

    w = gguf.GGUFWriter(str(out_file), "llama")
    w.add_name(name)
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_block_count(n_layers)
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(config["vocab_size"])
    w.add_file_type(ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(w, model_dir, config["vocab_size"], chat_template)

    files = sorted(model_dir.glob("*.safetensors"))
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue  # llama.cpp reuses token_embd when output.weight is absent
                target = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if target is None:
                    raise TuneforgeError(f"tensor '{key}' has no GGUF name for llama", "convert with llama.cpp's convert_hf_to_gguf.py")
                data = f.get_tensor(key).float().numpy()
                if key.endswith("q_proj.weight"):
                    data = _permute(data, n_head)
                elif key.endswith("k_proj.weight"):
                    data = _permute(data, n_kv)
                data, qtype = _round(data, quant, gguf, np)
                w.add_tensor(target, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _round(data, quant: str, gguf, np):
    """llama.cpp's rule: 1-D tensors (norms) stay f32; q8_0 needs rows in blocks of 32, else f16."""
    if data.ndim <= 1 or quant == "f32":
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if quant == "f16" or (quant == "q8_0" and data.shape[-1] % 32):
        return data.astype(np.float16), gguf.GGMLQuantizationType.F16
    qtype = gguf.GGMLQuantizationType.BF16 if quant == "bf16" else gguf.GGMLQuantizationType.Q8_0
    return gguf.quants.quantize(data, qtype), qtype


def _pre_tokenizer(tokenizer_json: dict) -> str:
    """llama.cpp's name for the BPE pre-tokenizer (tokenizer.ggml.pre), from its regex."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    text = json.dumps(pre)
    if "(?i:'s|'t|'re|'ve|'m|'ll|'d)" in text and "\\\\p{N}{1,3}" in text:
        return "llama-bpe"  # Llama 3
    if "Digits" in text and "ByteLevel" in text and '"individual_digits": true' in text:
        return "smollm"  # SmolLM / SmolLM2 from the hub: digits one by one, then GPT-2's regex
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"  # GPT-2's regex alone: what transformers builds when it reads a GGUF (our embedded SmolLM2)
    raise TuneforgeError("the tokenizer's pre-tokenizer is not one the GGUF exporter knows (SmolLM2, Llama 3)",
                         "export the merged model (--merge --dtype fp16) and convert it with llama.cpp's convert_hf_to_gguf.py")


def adds_bos(tok) -> bool:
    """Whether the tokenizer puts BOS in front of plain text (then llama.cpp/Ollama add it too)."""
    ids = tok("x")["input_ids"]
    return tok.bos_token_id is not None and bool(ids) and ids[0] == tok.bos_token_id


def _add_tokenizer(w, model_dir: Path, vocab_size: int, chat_template: str | None) -> None:
    """tokenizer.ggml.* for a byte-level BPE tokenizer, as convert_hf_to_gguf's get_vocab_base writes them."""
    import gguf
    from transformers import AutoTokenizer

    tj_path = model_dir / "tokenizer.json"
    tj = json.loads(tj_path.read_text(encoding="utf-8")) if tj_path.is_file() else {}
    if (tj.get("model") or {}).get("type") != "BPE" or (tj.get("model") or {}).get("byte_fallback"):
        raise TuneforgeError("GGUF export writes byte-level BPE tokenizers (SmolLM2, Llama 3); this one is SentencePiece-style or missing",
                             "export the merged model (--merge --dtype fp16) and convert it with llama.cpp's convert_hf_to_gguf.py")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    vocab = tok.get_vocab()
    reverse = {i: t for t, i in vocab.items()}
    added = {i: t for i, t in tok.added_tokens_decoder.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    merges = tj["model"].get("merges") or []
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(_pre_tokenizer(tj))
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for kind, adder in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("unk", w.add_unk_token_id),
                        ("pad", w.add_pad_token_id)):
        value = getattr(tok, f"{kind}_token_id", None)
        if value is not None:
            adder(int(value))
    template = chat_template if chat_template is not None else tok.chat_template
    # Mirror the HF tokenizer: the runtime adds BOS before the rendered prompt only where it did.
    w.add_add_bos_token(adds_bos(tok))
    w.add_add_eos_token(False)
    if template:
        w.add_chat_template(template)
