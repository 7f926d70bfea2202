"""Recipe validation: the messages a user sees for each kind of mistake, overrides, round-trips."""

from __future__ import annotations

import json

import pytest
import yaml

from tuneforge.runner.errors import RecipeError
from tuneforge.runner.recipe import Recipe, load_recipe, parse_override, recipe_from_dict, recipe_to_yaml

BASE = {"data": {"train": [{"path": "train.jsonl"}]}}


def recipe_file(tmp_path, data, name="r.yaml"):
    """A recipe file beside a real one-row train.jsonl (recipe files must name existing data)."""
    (tmp_path / "train.jsonl").write_text(json.dumps({"instruction": "Q", "output": "A"}) + "\n")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def errors_of(data, overrides=()):
    with pytest.raises(RecipeError) as exc:
        recipe_from_dict(data, list(overrides))
    return exc.value.errors


def test_unknown_key_suggests_the_close_one():
    errs = errors_of({**BASE, "train": {"learning_rat": 1e-4}, "methd": "lora"})
    assert "train.learning_rat: unknown key; did you mean 'train.learning_rate'?" in errs
    assert "methd: unknown key; did you mean 'method'?" in errs


def test_unknown_key_without_close_match_lists_known_keys():
    (err,) = errors_of({**BASE, "lora": {"zzz": 1}})
    assert err.startswith("lora.zzz: unknown key (known keys: r, alpha, dropout, target_modules")


def test_wrong_type_and_range_are_named_by_dotted_path():
    errs = errors_of({**BASE, "train": {"batch_size": "big", "learning_rate": -1}})
    assert any(e.startswith("train.batch_size: Input should be a valid integer") and "'big'" in e for e in errs)
    assert any(e.startswith("train.learning_rate: Input should be greater than 0") for e in errs)


def test_literal_errors_list_the_allowed_values():
    (err,) = errors_of({**BASE, "train": {"scheduler": "cosin"}})
    assert "'cosine', 'linear', 'constant' or 'constant_with_warmup'" in err and "(got 'cosin')" in err


def test_nested_list_paths_and_missing_fields():
    errs = errors_of({"data": {"train": [{"path": "a.json", "formt": "alpaca"}]}})
    assert errs == ["data.train.0.formt: unknown key; did you mean 'data.train.0.format'?"]
    (missing,) = errors_of({})
    assert missing.startswith("data: required field is missing")


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("train.learning_rate=1e-4", ["train", "learning_rate"], 1e-4),
        ("train.batch_size=4", ["train", "batch_size"], 4),
        ("data.train_on_prompt=true", ["data", "train_on_prompt"], True),
        ("lora.target_modules=[q_proj, v_proj]", ["lora", "target_modules"], ["q_proj", "v_proj"]),
        ("name=my-run", ["name"], "my-run"),
        ("model.revision=", ["model", "revision"], ""),
    ],
)
def test_override_values_are_yaml_typed(text, key, value):
    assert parse_override(text) == (key, value)


def test_overrides_apply_after_the_file_and_are_validated(tmp_path):
    path = recipe_file(tmp_path, {**BASE, "train": {"batch_size": 8}})
    rec = load_recipe(path, ["train.batch_size=2", "data.train.0.max_samples=10", "lora.r=4"])
    assert (rec.train.batch_size, rec.data.train[0].max_samples, rec.lora.r) == (2, 10, 4)
    with pytest.raises(RecipeError) as exc:
        load_recipe(path, ["train.bach_size=2"])
    assert "train.bach_size: unknown key (from the command line); did you mean 'train.batch_size'?" in str(exc.value)
    with pytest.raises(RecipeError, match="not an index"):
        load_recipe(path, ["data.train.5.path=x"])
    with pytest.raises(RecipeError, match="not key=value"):
        load_recipe(path, ["train.batch_size"])


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    path = recipe_file(tmp_path / "sub", BASE)
    rec = load_recipe(path)
    assert rec.data.train[0].path == str(tmp_path / "sub" / "train.jsonl")
    assert rec.model.name_or_path == "smollm2-135m"  # aliases and hub ids stay as written


def test_resolved_recipe_round_trips(tmp_path):
    path = recipe_file(tmp_path, {**BASE, "name": "x", "train": {"epochs": 2, "scheduler": "linear"}})
    rec = load_recipe(path, ["lora.r=8"])
    saved = tmp_path / "saved.yaml"
    saved.write_text(recipe_to_yaml(rec))
    again = load_recipe(saved)
    assert again == rec
    assert recipe_to_yaml(again) == recipe_to_yaml(rec)
    assert set(yaml.safe_load(recipe_to_yaml(rec))) == set(Recipe.model_fields)  # every field written out


def test_bad_yaml_and_non_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  train: [\n")
    with pytest.raises(RecipeError, match="not valid YAML at line"):
        load_recipe(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="top level must be a mapping"):
        load_recipe(lst)
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_yaml_is_never_executed(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(evil)


def test_validate_cli_exit_codes_and_output(tmp_path, run_cli):
    path = recipe_file(tmp_path, BASE)
    ok = run_cli("validate", str(path), "train.batch_size=3")
    assert ok.returncode == 0, ok.stderr
    assert yaml.safe_load(ok.stdout)["train"]["batch_size"] == 3
    bad = run_cli("validate", str(path), "train.batch_size=0", "train.schedulr=x")
    assert bad.returncode == 2
    assert "train.batch_size: Input should be greater than or equal to 1 (got 0)" in bad.stderr
    assert "did you mean 'train.scheduler'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_schema_cli_prints_json_schema_with_descriptions(run_cli):
    out = run_cli("recipe", "schema")
    assert out.returncode == 0
    schema = json.loads(out.stdout)
    assert schema["title"] == "Recipe"
    lr = schema["$defs"]["TrainSpec"]["properties"]["learning_rate"]
    assert lr["description"] == Recipe.model_fields["train"].annotation.model_fields["learning_rate"].description


def test_recipe_reference_doc_is_generated_from_the_models():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "gen_recipe_docs.py"
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


# ---------------------------------------------------------------------------------------------
# did-you-mean across the whole schema, in files and overrides


@pytest.mark.parametrize("data, overrides, line", [
    ({**BASE, "learnig_rate": 1e-4}, [], "learnig_rate: unknown key; did you mean 'train.learning_rate'?"),
    (BASE, ["learnig_rate=1e-4"], "learnig_rate: unknown key (from the command line); did you mean 'train.learning_rate'?"),
    ({"data": {"train": [{"pathh": "a.json"}]}}, [], "data.train.0.pathh: unknown key; did you mean 'data.train.0.path'?"),
    (BASE, ["data.train.0.pathh=a.json"], "data.train.0.pathh: unknown key (from the command line); did you mean 'data.train.0.path'?"),
    ({**BASE, "lora": {"rank": 8}}, [], "lora.rank: unknown key; did you mean 'lora.r'?"),
    ({**BASE, "batch_size": 4}, [], "batch_size: unknown key; did you mean 'train.batch_size'?"),
    ({**BASE, "train": {"max_length": 512}}, [], "train.max_length: unknown key; did you mean 'data.max_length'?"),
    ({**BASE, "trian": {"epochs": 1}}, [], "trian: unknown key; did you mean 'train'?"),
    ({**BASE, "num_train_epochs": 3}, [], "num_train_epochs: unknown key; did you mean 'train.epochs'?"),
    ({**BASE, "speed": {"pack": True}}, [], "speed.pack: unknown key; did you mean 'speed.packing'?"),
])
def test_unknown_keys_get_the_closest_key_anywhere_in_the_schema(data, overrides, line):
    assert line in errors_of(data, overrides)


def test_train_suggests_the_key_for_a_misspelt_override(run_cli):
    from conftest import ROOT

    res = run_cli("train", str(ROOT / "recipes" / "quickstart.yaml"), "learnig_rate=1e-4")
    assert res.returncode == 2, res.stderr
    assert "did you mean 'train.learning_rate'?" in res.stderr and "Traceback" not in res.stderr


# ---------------------------------------------------------------------------------------------
# recipe files that cannot be read, and the local files a recipe names


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "this is a binary file, not a YAML recipe"),
    (b"name: caf\xe9\ndata:\n  train: []\n", "line 1 is not UTF-8 text (byte 0xe9)"),
    (b"seed: 1\n\nname: \xff\n", "line 3 is not UTF-8 text (byte 0xff)"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b"hello\n", "the top level must be a mapping of keys (model:, data:, train:, ...), not a str"),
    (b"- a\n- b\n", "not a list"),
])
def test_unreadable_recipe_files_are_recipe_errors(tmp_path, content, message):
    path = tmp_path / "r.yaml"
    path.write_bytes(content)
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    assert message in str(exc.value) and str(path) in str(exc.value)


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = recipe_file(tmp_path, BASE)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_recipe(path).data.train[0].path == str(tmp_path / "train.jsonl")


def test_a_folder_is_not_a_recipe(tmp_path):
    with pytest.raises(RecipeError, match="is a folder, not a recipe file"):
        load_recipe(tmp_path)


def test_missing_local_files_are_listed_with_the_other_problems(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.json").write_text("[]")
    (tmp_path / "mixed" / "b.csv").write_text("x\n")
    (tmp_path / "notes.doc").write_text("x")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"name_or_path": "./no-model", "chat_template": "mine.jinja"},
        "data": {"train": [{"path": "nope.jsonl"}, {"path": "empty"}, {"path": "mixed"}, {"path": "notes.doc"},
                           {"path": "hf:owner/some-dataset"}, {"dataset": "x", "registry": "nowhere"}]},
        "train": {"batch_size": 0},
    }))
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    errs = exc.value.errors
    assert f"data.train.0.path: data file '{tmp_path / 'nope.jsonl'}' does not exist" in "\n".join(errs)
    for start, text in [("data.train.1.path", "holds no data files"), ("data.train.2.path", "mixes file types"),
                        ("data.train.3.path", "unsupported type '.doc'"), ("data.train.5.registry", "does not exist"),
                        ("model.name_or_path", "does not exist"), ("model.chat_template", "does not exist"),
                        ("train.batch_size", "greater than or equal to 1")]:
        assert any(e.startswith(start + ":") and text in e for e in errs), (start, errs)
    assert not any(e.startswith("data.train.4") for e in errs)  # hub datasets are not local paths
    assert len(errs) == 8


def test_validate_exits_2_for_missing_data(tmp_path, run_cli):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": [{"path": "gone.jsonl"}]}}))
    res = run_cli("validate", "--no-estimate", str(path))
    assert res.returncode == 2 and "data.train.0.path: data file" in res.stderr and "gone.jsonl' does not exist" in res.stderr
