"""Write recipes/data/general_replay.jsonl: 36 general instructions (written for tuneforge) answered by
the embedded SmolLM2-135M-Instruct itself, greedily. Mixed into the quickstart beside the identity
rows, they keep the model's general behaviour while it learns its new name (replay, as
LLaMA-Factory's demo mixes identity with alpaca) without shipping anyone else's data.

  python scripts/gen_quickstart_replay.py      # ~2 min on 2 cores
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROMPTS = [
    "Give me three tips for staying healthy.", "How do I make a cup of green tea?", "What is photosynthesis?",
    "Explain what a prime number is.", "Suggest a name for a small bakery.", "What causes rain?",
    "How can I save money on groceries?", "Write a short poem about the sea.", "What is the capital of France?",
    "Describe the water cycle in simple words.", "How do vaccines work?", "Give two tips for a job interview.",
    "What is a for loop in programming?", "How do I reverse a list in JavaScript?", "What is machine learning?",
    "How do I center text in HTML?", "What are the benefits of reading books?",
"What is the difference between weather and climate?",
    "Give me a simple recipe for pancakes.",
    "Why is the sky blue?", "How do I improve my sleep?", "What is a noun? Give an example.",
    "Summarize the story of Cinderella in two sentences.", "How does a bicycle stay upright?",
    "What should I pack for a weekend hike?", "What is a healthy breakfast?",
    "How do I write a good email subject line?", "What is the boiling point of water?",
    "Name three renewable energy sources.", "How can I learn a new language faster?",
    "What does a CPU do in a computer?", "Give three ideas for a rainy-day activity.",
    "How do I calculate the area of a circle?", "What is the purpose of a resume?",
    "Explain what a variable is in programming.", "How can I reduce stress at work?",
]


def main(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / ".pkg"))
    from tuneforge.runner.model import resolve

    path = resolve("smollm2-135m").path
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    done = {json.loads(line)["messages"][0]["content"] for line in out.read_text(encoding="utf-8").splitlines()} \
        if out.is_file() else set()
    for prompt in [p for p in PROMPTS if p not in done]:  # goes on where an interrupted run stopped
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=120, do_sample=False, repetition_penalty=1.1)
        reply = tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        if "." in reply[40:]:  # end at the last full sentence of a cut reply
            reply = reply[: reply.rindex(".") + 1]
        row = {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]}
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(prompt, "->", reply[:80].replace("\n", " "), flush=True)


if __name__ == "__main__":
    main(Path(__file__).resolve().parents[1] / "recipes" / "data" / "general_replay.jsonl")
