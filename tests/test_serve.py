"""`tuneforge serve` with the official openai client against the real server on a free loopback port.

Two servers for the module: a tiny model taught to call a tool (continuous batching, no key), and
the random tiny model with tight limits and an API key (one request at a time). Both must stop
cleanly on a signal, leaving no model process behind.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import signal

import httpx
import openai  # the serve extra; the test extra installs it
import pytest

from serve_helpers import ANSWER, ASK, HELLO, HELLO_REPLY, TOOLS, Server, teach_tool_calls

KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def strict_started(tiny_model_dir):
    """Started first, so it loads while the other model is taught."""
    srv = Server(str(tiny_model_dir), "smollm2-135m", "--no-batching", "--max-concurrent", "1",
                 "--max-body-bytes", "16384", env={"TUNEFORGE_API_KEY": KEY}, wait=False)
    yield srv
    assert srv.stop(signal.SIGINT) == 130, srv.output()
    assert "Traceback" not in srv.output()
    assert KEY not in srv.output()  # the key is never logged


@pytest.fixture(scope="module")
def taught(tiny_model_dir, tmp_path_factory, strict_started):
    return teach_tool_calls(tiny_model_dir, tmp_path_factory.mktemp("taught"))


@pytest.fixture(scope="module")
def server(taught):
    srv = Server(str(taught), "--max-concurrent", "32")
    yield srv
    kids = srv.children()
    assert srv.stop(signal.SIGTERM) == 143, srv.output()
    assert kids and _gone(kids), "a model process outlived the server"


@pytest.fixture(scope="module")
def strict(strict_started):
    """The random tiny model and SmolLM2, one request at a time, an API key and a small body limit."""
    return strict_started.wait()


def _gone(pids: list[int], timeout: float = 20) -> bool:
    """Whether the processes exit (they follow their parent out within moments)."""
    import psutil

    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def client(srv, key: str = "none"):
    return openai.OpenAI(base_url=srv.base + "/v1", api_key=key, max_retries=0, timeout=120)


def test_models_and_a_greedy_reply_with_exact_usage(server, taught):
    from transformers import AutoTokenizer

    c = client(server)
    name = taught.name
    assert [m.id for m in c.models.list().data] == [name]
    r = c.chat.completions.create(model=name, messages=[{"role": "user", "content": HELLO}], temperature=0, max_tokens=40)
    assert r.choices[0].message.content == HELLO_REPLY and r.choices[0].finish_reason == "stop"
    tok = AutoTokenizer.from_pretrained(taught)
    prompt = tok.apply_chat_template([{"role": "user", "content": HELLO}], add_generation_prompt=True, tokenize=True)["input_ids"]
    assert r.usage.prompt_tokens == len(prompt)
    assert r.usage.completion_tokens == len(tok(HELLO_REPLY + "<|im_end|>", add_special_tokens=False)["input_ids"])
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    short = c.chat.completions.create(model=name, messages=[{"role": "user", "content": HELLO}], max_tokens=2, temperature=0)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2
    stopped = c.chat.completions.create(model=name, messages=[{"role": "user", "content": HELLO}], stop=[","], temperature=0)
    assert stopped.choices[0].message.content == "Hi there" and stopped.choices[0].finish_reason == "stop"
    text = c.completions.create(model=name, prompt="Hello", max_tokens=3, temperature=0)
    assert text.choices[0].finish_reason == "length" and text.usage.completion_tokens == 3


def test_streaming_chunks_come_in_openais_order_then_done(server, taught):
    body = {"model": taught.name, "messages": [{"role": "user", "content": HELLO}], "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.base + "/v1/chat/completions", json=body, timeout=60) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0
    final = chunks[-2]["choices"][0]
    assert final["finish_reason"] == "stop" and final["delta"] == {}
    middle = chunks[1:-2]
    assert middle and all(ch["choices"][0]["finish_reason"] is None for ch in middle)
    assert "".join(ch["choices"][0]["delta"]["content"] for ch in middle) == HELLO_REPLY
    assert len({ch["id"] for ch in chunks}) == 1
    stream = client(server).chat.completions.create(model=taught.name, messages=[{"role": "user", "content": HELLO}],
                                                    temperature=0, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == HELLO_REPLY


def test_tool_call_round_trip_streamed_and_not(server, taught):
    c = client(server)
    ask = [{"role": "user", "content": ASK}]
    r = c.chat.completions.create(model=taught.name, messages=ask, tools=TOOLS, temperature=0)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and not msg.content
    (call,) = msg.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    names, args = {}, {}
    for ch in c.chat.completions.create(model=taught.name, messages=ask, tools=TOOLS, temperature=0, stream=True):
        for d in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            names[d.index] = (names.get(d.index) or "") + (d.function.name or "")
            args[d.index] = args.get(d.index, "") + (d.function.arguments or "")
    assert names == {0: "get_weather"} and json.loads(args[0]) == {"city": "Paris"}
    follow = ask + [msg.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'}]
    r2 = c.chat.completions.create(model=taught.name, messages=follow, tools=TOOLS, temperature=0)
    assert r2.choices[0].message.content == ANSWER and r2.choices[0].finish_reason == "stop"


def test_twenty_concurrent_streams_all_complete_with_their_own_replies(server, taught):
    c = client(server)
    prompts = [HELLO, ASK] * 10

    def one(p):
        tools = TOOLS if p == ASK else None
        parts, calls = [], []
        for ch in c.chat.completions.create(model=taught.name, messages=[{"role": "user", "content": p}],
                                            temperature=0, stream=True, **({"tools": tools} if tools else {})):
            if ch.choices:
                parts.append(ch.choices[0].delta.content or "")
                calls += [d.function.name for d in ch.choices[0].delta.tool_calls or [] if d.function.name]
        return "".join(parts), calls

    with cf.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, prompts))
    assert results == [(HELLO_REPLY, []) if p == HELLO else ("", ["get_weather"]) for p in prompts]


def test_refusals_use_openais_error_shape(server, strict, tiny_model_dir):
    c = client(server)
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "model_not_found" and "nope" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=server.health()["models"][0], messages=[])
    bad = httpx.post(server.base + "/v1/chat/completions", content=b"{not json", timeout=10)
    assert bad.status_code == 400 and set(bad.json()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=server.health()["models"][0], messages=[{"role": "user", "content": "x"}],
                                  presence_penalty=0.5)
    assert e.value.body["param"] == "presence_penalty"
    with pytest.raises(openai.AuthenticationError):
        client(strict, "wrong").models.list()
    s = client(strict, KEY)
    with pytest.raises(openai.BadRequestError) as e:
        s.chat.completions.create(model=tiny_model_dir.name, messages=[{"role": "user", "content": "word " * 2100}])
    assert e.value.body["code"] == "context_length_exceeded" and "2048" in e.value.body["message"]
    big = httpx.post(strict.base + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                     json={"prompt": "x" * 20000}, timeout=10)
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"


def test_a_client_that_leaves_frees_its_slot_at_once(strict, tiny_model_dir):
    s = client(strict, KEY)
    body = {"model": tiny_model_dir.name, "prompt": "Once upon a time", "max_tokens": 2000, "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", strict.base + "/v1/completions", json=body, headers=headers, timeout=60) as r:
        lines = r.iter_lines()  # held: a dropped iterator closes the stream
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["choices"][0]["text"], first
        assert strict.health()["generating"] == 1
        with pytest.raises(openai.RateLimitError):  # --max-concurrent 1: a second request is refused meanwhile
            s.completions.create(model=tiny_model_dir.name, prompt="Hi", max_tokens=2)
    # the stream is closed: the next request is served at once, not after the 2000 tokens
    reply = s.completions.create(model=tiny_model_dir.name, prompt="Hi", max_tokens=2, timeout=4)
    assert reply.usage.completion_tokens == 2 and strict.health()["generating"] == 0


def test_several_models_at_once_each_under_its_own_name(strict, tiny_model_dir):
    s = client(strict, KEY)
    assert [m.id for m in s.models.list().data] == [tiny_model_dir.name, "smollm2-135m"]
    for name in (tiny_model_dir.name, "smollm2-135m"):
        r = s.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
        assert r.model == name and r.usage.completion_tokens == 3
    unnamed = httpx.post(strict.base + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                         json={"prompt": "x"}, timeout=10)
    assert unnamed.status_code == 400 and unnamed.json()["error"]["param"] == "model"


def test_non_loopback_host_needs_an_api_key(run_cli, tiny_model_dir):
    res = run_cli("serve", str(tiny_model_dir), "--host", "0.0.0.0", timeout=120)
    assert res.returncode == 2 and "API key" in res.stderr and "SSH tunnel" in res.stderr
    assert "Traceback" not in res.stderr


def test_chat_url_talks_to_the_server_with_the_same_repl(run_cli, server, taught):
    res = run_cli("chat", "--url", server.base + "/v1", "--plain", input=HELLO + "\n", timeout=180)
    assert res.returncode == 0, res.stderr
    assert HELLO_REPLY in res.stdout
    wrong = run_cli("chat", "nope", "--url", server.base + "/v1", "--plain", input="x\n", timeout=180)
    assert wrong.returncode == 2 and taught.name in wrong.stderr and "Traceback" not in wrong.stderr


def test_remote_engine_shows_tool_calls_as_lines(server, taught):
    from tuneforge.runner.serve.client import RemoteChat, parse_tool_line

    engine = RemoteChat.connect(server.base + "/v1")
    assert engine.name == taught.name
    assert engine.reply([{"role": "user", "content": HELLO}]) == HELLO_REPLY and engine.last_stats.new_tokens > 0
    engine.tools = TOOLS
    line = engine.reply([{"role": "user", "content": ASK}])
    assert parse_tool_line(line) == ("get_weather", {"city": "Paris"})
    # the next prompt answers the call as the tool, as a person pasting the tool's output does
    history = [{"role": "user", "content": ASK}, {"role": "assistant", "content": line},
               {"role": "user", "content": '{"temp_c": 18}'}]
    assert engine.reply(history) == ANSWER
