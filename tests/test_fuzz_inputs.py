"""Fuzzing what users feed tuneforge: whatever a recipe, an override or a data file holds, the CLI
answers with exit 0 or a user error (exit 2) that names the field, file or row — never a traceback
and never 'tuneforge failed' (exit 1, which means a bug). The CLI runs in-process (CliRunner), so
hundreds of recipes take seconds; data rows go through the real tokenizer of the tiny model."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import get_origin

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tuneforge.runner.cli import app
from tuneforge.runner.recipe import Recipe
from tuneforge.runner.recipe_io import inner_model

# ~60 s on a 2-core CPU in all; the data test loads the tiny model's tokenizer once per example
FUZZ = settings(deadline=None, database=None, max_examples=80, suppress_health_check=[HealthCheck.too_slow])
ROW = {"instruction": "Say hi.", "output": "Hi!"}


def invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args))
    out = res.output
    assert "Traceback" not in out and "tuneforge failed" not in out, out
    assert res.exit_code in (0, 2), (res.exit_code, out, res.exception)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res.exit_code, out


# --------------------------------------------------------------------------------------------
# the schema's sections, for generating keys in every one of them


def _sections() -> dict[str, type]:
    out, todo = {}, [("", Recipe)]
    while todo:
        prefix, model = todo.pop()
        out[prefix] = model
        for name, field in model.model_fields.items():
            sub = inner_model(field.annotation)
            if sub is not None and name != "eval":
                todo.append((f"{prefix}{name}.0." if get_origin(field.annotation) is list else f"{prefix}{name}.", sub))
    return {k.rstrip("."): v for k, v in out.items()}


SECTIONS = _sections()
SCALARS = [(s, k) for s, m in SECTIONS.items() for k, f in m.model_fields.items() if inner_model(f.annotation) is None]
KEY_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=16)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=12)


@pytest.fixture(scope="module")
def workdir(tiny_model_dir):
    d = Path(tempfile.mkdtemp(prefix="tf-fuzz-"))
    (d / "rows.jsonl").write_text(json.dumps(ROW) + "\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def base_recipe(model_dir) -> dict:
    return {"model": {"name_or_path": str(model_dir)}, "data": {"train": [{"path": "rows.jsonl"}], "cache": False}}


def put(recipe: dict, dotted: str, key: str, value) -> None:
    node = recipe
    for part in [p for p in dotted.split(".") if p]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[key] = value


def where(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def write(workdir: Path, recipe) -> Path:
    path = workdir / "r.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return path


def test_the_base_recipe_is_valid(workdir, tiny_model_dir):
    code, out = invoke("validate", "--no-estimate", str(write(workdir, base_recipe(tiny_model_dir))))
    assert code == 0, out


@FUZZ
@given(section=st.sampled_from(sorted(SECTIONS)), key=KEY_TEXT, value=JSON)
@example(section="", key="[/]", value=1).via("rich markup in a key")
@example(section="train", key="x[bold]y", value=[]).via("rich markup in a key")
def test_unknown_keys_anywhere_are_named(workdir, tiny_model_dir, section, key, value):
    assume(key not in SECTIONS[section].model_fields)
    recipe = base_recipe(tiny_model_dir)
    put(recipe, section, key, value)
    code, out = invoke("validate", "--no-estimate", str(write(workdir, recipe)))
    assert code == 2 and f"{where(section, key)}: unknown key" in out, out


def _typo(draw, key: str) -> str:
    i = draw(st.integers(0, len(key) - 1))
    how = draw(st.sampled_from(["drop", "double", "swap", "replace"]))
    if how == "drop":
        return key[:i] + key[i + 1:]
    if how == "double":
        return key[:i] + key[i] + key[i:]
    if how == "swap" and i < len(key) - 1:
        return key[:i] + key[i + 1] + key[i] + key[i + 2:]
    return key[:i] + draw(st.sampled_from("aeiouxz_")) + key[i + 1:]


@FUZZ
@given(data=st.data())
def test_near_miss_keys_get_a_suggestion(workdir, tiny_model_dir, data):
    section, key = data.draw(st.sampled_from([(s, k) for s, m in SECTIONS.items() for k in m.model_fields if len(k) >= 4]))
    typo = _typo(data.draw, key)
    assume(typo not in SECTIONS[section].model_fields)
    recipe = base_recipe(tiny_model_dir)
    put(recipe, section, typo, 1)
    code, out = invoke("validate", "--no-estimate", str(write(workdir, recipe)))
    assert code == 2 and f"{where(section, typo)}: unknown key" in out and "did you mean '" in out, out


NOT_A_NUMBER = st.text(st.characters(whitelist_categories=("Ll", "Lu")), min_size=1, max_size=8).filter(
    lambda t: t.lower() not in {"nan", "inf", "infinity", "e", "true", "false", "yes", "no", "on", "off", "y", "n"})


@FUZZ
@given(data=st.data())
def test_wrong_types_are_named_by_their_dotted_path(workdir, tiny_model_dir, data):
    section, key = data.draw(st.sampled_from([sk for sk in SCALARS if sk != ("", "version")]))
    value = data.draw(st.one_of(st.lists(st.integers(), min_size=1, max_size=3),
                                st.dictionaries(NOT_A_NUMBER, st.integers(), min_size=1, max_size=2), NOT_A_NUMBER))
    recipe = base_recipe(tiny_model_dir)
    put(recipe, section, key, value)
    code, out = invoke("validate", "--no-estimate", str(write(workdir, recipe)))
    if code == 2:  # some values are fine (any text is a valid run name); a refusal names the field
        named = (f"{where(section, key)}:", f"{where(section, key)}.", f"{key} ", f"'{key}'")  # cross-field checks quote it
        assert any(n in out for n in named), out


@settings(FUZZ, max_examples=15)
@given(section=st.sampled_from(sorted(s for s in SECTIONS if s)), depth=st.one_of(st.integers(1, 60), st.sampled_from([400, 1200])),
       brackets=st.sampled_from(["[]", "{}"]))
def test_deep_nesting_is_a_recipe_error(workdir, tiny_model_dir, section, depth, brackets):
    recipe = base_recipe(tiny_model_dir)
    path = write(workdir, recipe)
    nested = brackets[0] * depth + ("" if brackets == "[]" else "a: 1") + brackets[1] * depth
    if brackets == "{}":
        nested = "{a: " * depth + "1" + "}" * depth
    top = section.split(".")[0]
    path.write_text(path.read_text(encoding="utf-8") + f"{top}x: {nested}\n", encoding="utf-8")
    code, out = invoke("validate", "--no-estimate", str(path))
    assert code == 2 and str(path) in out and (f"{top}x" in out or "nested too deeply" in out), out


@FUZZ
@given(at=st.floats(0, 1), junk=st.binary(min_size=1, max_size=8), bom=st.booleans())
def test_bad_bytes_in_a_recipe_name_the_file(workdir, tiny_model_dir, at, junk, bom):
    path = write(workdir, base_recipe(tiny_model_dir))
    raw = path.read_bytes()
    i = int(at * len(raw))
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + raw[:i] + junk + raw[i:])
    code, out = invoke("validate", "--no-estimate", str(path))
    if code == 2:
        assert str(path) in out, out


@FUZZ
@given(top=JSON.filter(lambda v: not isinstance(v, dict)))
def test_a_recipe_that_is_not_a_mapping(workdir, top):
    path = workdir / "r.yaml"
    path.write_text(yaml.safe_dump(top), encoding="utf-8")
    code, out = invoke("validate", "--no-estimate", str(path))
    assert code == 2 and str(path) in out, out


OVERRIDE_KEYS = st.one_of(st.sampled_from([where(s, k) for s, k in SCALARS] + sorted(s for s in SECTIONS if s)),
                          st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12))


@FUZZ
@given(key=OVERRIDE_KEYS, value=st.one_of(st.text(max_size=20), JSON.map(json.dumps)))
@example(key="data.train.0.registry", value="a" * 300).via("a name too long for the file system")
@example(key="model.chat_template", value="x\x00.jinja").via("a NUL in a path")
def test_any_override_is_applied_or_refused_by_name(workdir, tiny_model_dir, key, value):
    assume("=" not in key)
    path = write(workdir, base_recipe(tiny_model_dir))
    code, out = invoke("validate", "--no-estimate", str(path), f"{key}={value}")
    if code == 2:
        named = [p.strip() for p in key.split(".") if p.strip()]
        assert (named and named[0] in out) or f"override '{key}=" in out, out


# --------------------------------------------------------------------------------------------
# data rows through `tuneforge data check`

TEXTISH = st.one_of(st.text(max_size=30), JSON)
ALPACA = st.fixed_dictionaries({"instruction": TEXTISH, "output": TEXTISH},
                               optional={"input": TEXTISH, "system": TEXTISH, "history": JSON})
SHAREGPT = st.fixed_dictionaries({"conversations": st.lists(st.fixed_dictionaries({
    "from": st.one_of(st.sampled_from(["human", "gpt", "system", "observation", "function_call"]), st.text(max_size=6)),
    "value": TEXTISH}), max_size=4)}, optional={"system": TEXTISH, "tools": TEXTISH})
MESSAGES = st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries({
    "role": st.one_of(st.sampled_from(["user", "assistant", "system", "tool"]), st.text(max_size=6)),
    "content": TEXTISH}), max_size=4)})
ROWS = st.lists(st.one_of(ALPACA, SHAREGPT, MESSAGES, JSON), min_size=1, max_size=4)


@settings(FUZZ, max_examples=40)
@given(rows=ROWS, suffix=st.sampled_from([".jsonl", ".json"]), ascii_only=st.booleans(),
       damage=st.one_of(st.none(), st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=6)),
                        st.sampled_from(["bom", "deep"])))
def test_any_rows_are_checked_or_refused_by_file_and_row(workdir, tiny_model_dir, rows, suffix, ascii_only, damage):
    data = workdir / f"rows{suffix}"
    rows = [ROW, *rows, ROW]  # good rows around the generated ones: bad rows are then reported one by one
    if suffix == ".jsonl":
        raw = "".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in rows).encode()
    else:
        raw = json.dumps(rows, ensure_ascii=ascii_only, indent=1).encode()
    if damage == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif damage == "deep":
        raw = raw + b"[" * 20_000 + b"]" * 20_000 + (b"\n" if suffix == ".jsonl" else b"")
    elif damage is not None:
        i = int(damage[0] * len(raw))
        raw = raw[:i] + damage[1] + raw[i:]
    data.write_bytes(raw)
    recipe = base_recipe(tiny_model_dir)
    recipe["data"]["train"][0]["path"] = data.name
    recipe["data"]["max_length"] = 64
    code, out = invoke("data", "check", str(write(workdir, recipe)))
    event(f"exit {code}" + (" with bad rows" if "bad row(s)" in out else ""))
    if code == 2:
        assert data.name in out, out
        if "bad row(s)" in out:  # rows refused one by one: each listed with its place
            assert "line " in out if suffix == ".jsonl" else "row " in out, out
