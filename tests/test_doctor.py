"""`tuneforge doctor` reports the facts a bug report needs."""

import re


def test_doctor_reports_versions_bf16_cache_and_embedded_model(run_cli):
    out = run_cli("doctor", env={"COLUMNS": "200"})
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    for name in ("python", "torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets",
                 "textual", "cpu bf16", "auto placement", "embedded model", "model cache"):
        assert re.search(rf"^{re.escape(name)}\s", text, re.M), name
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in text
    assert "No problems found." in text
