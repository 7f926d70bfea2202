"""The HTTP face of `tuneforge serve`: an OpenAI-compatible FastAPI app on transformers' engine.

transformers' `build_server` is not used as it is: its errors are not in OpenAI's shape, it ignores
unsupported fields with a log line instead of refusing them, its streams end without `[DONE]`, and
it exposes `/load_model`, `/reset` and any hub model to whoever can reach it. Its parts are used:
`ModelManager`/`EngineClient` (one process per model, continuous batching with paged attention),
`CancelOnDisconnect` (a client that leaves cancels its generation) and `EventStream`.
"""


import hmac
import json
from dataclasses import dataclass
from typing import Any

from .generate import Generation
from .models import Target, key_of
from .wire import DONE, ApiError, ChatChunks, TextChunks, check_fields, stops_of, usage

DEFAULT_MAX_TOKENS = 512


@dataclass
class Limits:
    max_body_bytes: int = 1_000_000
    max_concurrent: int = 64  # requests generating at once; more get a 429
    max_model_len: int | None = None  # prompt + reply, tokens; default: the model's context


class Slots:
    """Concurrency limit: a request holds a slot while it generates."""

    def __init__(self, n: int):
        self.n, self.used = n, 0

    def take(self) -> None:
        if self.used >= self.n:
            raise ApiError(429, f"the server is busy: {self.n} requests are generating (--max-concurrent)",
                           code="rate_limit_exceeded")
        self.used += 1

    def give(self) -> None:
        self.used -= 1


class _Auth:
    """ASGI middleware: a Bearer key compared in constant time; /health stays open. The key is never logged."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] != "/health":
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"")
            token = given[7:] if given[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(token, self.key):
                from fastapi.responses import JSONResponse

                err = ApiError(401, "invalid or missing API key: send 'Authorization: Bearer KEY'",
                               code="invalid_api_key")
                return await JSONResponse(err.body(), status_code=401)(scope, receive, send)
        return await self.app(scope, receive, send)


def build_app(manager, served: list[Target], tokenizers: dict, limits: Limits, api_key: str | None = None):
    """The FastAPI app over a started transformers `ModelManager` holding `served` (by `key_of`)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException
    from transformers.cli.serving.utils import CancelOnDisconnect, EventStream

    by_id = {t.id: t for t in served}
    slots = Slots(limits.max_concurrent)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        manager.shutdown()  # the model processes stop with the server

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(CancelOnDisconnect)
    if api_key:
        app.add_middleware(_Auth, key=api_key)

    @app.exception_handler(ApiError)
    async def _api_error(_r, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(_r, exc: HTTPException):
        return JSONResponse(ApiError(exc.status_code, str(exc.detail)).body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r, exc):
        return JSONResponse(ApiError(400, str(exc)).body(), status_code=400)

    async def read_json(request: Request) -> Any:
        size = request.headers.get("content-length")
        if size and size.isdigit() and int(size) > limits.max_body_bytes:
            raise ApiError(413, f"the request is {size} bytes; this server takes at most {limits.max_body_bytes} "
                           "(--max-body-bytes)", code="request_too_large")
        raw = await request.body()
        if len(raw) > limits.max_body_bytes:
            raise ApiError(413, f"the request is larger than {limits.max_body_bytes} bytes (--max-body-bytes)",
                           code="request_too_large")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None

    def pick(body: dict) -> tuple[Target, Any]:
        name = body.get("model")
        if name is None:
            if len(served) > 1:
                raise ApiError(400, f"'model' is required: this server serves {', '.join(by_id)}", param="model",
                               code="missing_required_parameter")
            name = served[0].id
        if name not in by_id:
            raise ApiError(404, f"The model '{name}' does not exist; this server serves: {', '.join(by_id)}",
                           param="model", code="model_not_found")
        engine = manager.engines[key_of(by_id[name])]
        if engine.is_dead:
            raise ApiError(503, f"the engine of '{name}' stopped: {engine.fatal_error}", code="engine_dead")
        return by_id[name], engine

    def kwargs_for(body: dict, engine, prompt_len: int) -> dict:
        limit = manager.generation_state.context_length(engine.model_config)
        want = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is not None and prompt_len >= limit:
            raise ApiError(400, f"the prompt has {prompt_len} tokens; this model takes at most {limit} tokens, prompt "
                           "and reply together", param="messages", code="context_length_exceeded")
        if limit is not None and want is not None and prompt_len + int(want) > limit:
            raise ApiError(400, f"the prompt ({prompt_len} tokens) and max_tokens ({want}) exceed this model's "
                           f"context of {limit} tokens", param="max_tokens", code="context_length_exceeded")
        gen = engine.generation_config
        out = {"max_new_tokens": int(want) if want is not None else min(DEFAULT_MAX_TOKENS, (limit or 10**9) - prompt_len),
               "eos_token_id": gen.eos_token_id, "do_sample": bool(gen.do_sample),
               "temperature": gen.temperature, "top_k": gen.top_k, "top_p": gen.top_p}
        if body.get("temperature") is not None:
            out["temperature"] = float(body["temperature"])
            out["do_sample"] = out["temperature"] > 0
        if body.get("top_p") is not None:
            out["top_p"] = float(body["top_p"])
        if body.get("seed") is not None:
            out["seed"] = int(body["seed"])
        return out

    @app.get("/health")
    def health():
        if manager.is_dead:
            return JSONResponse({"status": "unhealthy"}, status_code=503)
        return {"status": "ok", "models": list(by_id), "generating": slots.used}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": t.id, "object": "model", "created": 0, "owned_by": "tuneforge"}
                                           for t in served]}

    @app.get("/v1/models/{name:path}")
    def model(name: str):
        if name not in by_id:
            raise ApiError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
        return {"id": name, "object": "model", "created": 0, "owned_by": "tuneforge"}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_json(request)
        check_fields(body, chat=True)
        target, engine = pick(body)
        tok = tokenizers[target.id]
        tools = body.get("tools") if body.get("tool_choice") != "none" else None
        messages = _template_messages(body["messages"])
        try:
            inputs = tok.apply_chat_template(messages, tools=tools or None, add_generation_prompt=True, tokenize=True,
                                             return_dict=True, return_tensors=None if engine.use_cb else "pt")
        except Exception as exc:  # noqa: BLE001 - a template refusing the conversation is the request's fault
            raise ApiError(400, f"the model's chat template refused the messages: {exc}", param="messages") from None
        ids = inputs["input_ids"]
        n_prompt = len(ids) if engine.use_cb else int(ids.shape[-1])
        kwargs = kwargs_for(body, engine, n_prompt)
        names = [(t.get("function") or t).get("name") for t in tools] if tools else None
        slots.take()
        try:
            gen = Generation(engine, dict(inputs), kwargs, n_prompt, stops_of(body), names, tok.chat_template)
        except BaseException:
            slots.give()
            raise
        chunks = ChatChunks(target.id)
        if body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            return EventStream(_chat_stream(gen, chunks, include, slots), media_type="text/event-stream")
        try:
            content, reasoning = [], []
            async for p in gen.pieces():
                (reasoning if p.kind == "reasoning" else content).append(p.text)
        finally:
            slots.give()
        o = gen.outcome
        message: dict = {"role": "assistant", "content": "".join(content) or (None if o.tool_calls else "")}
        if o.tool_calls:
            message["tool_calls"] = [{"id": f"call_{chunks.id[-12:]}_{i}", "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments_json()}}
                                     for i, c in enumerate(o.tool_calls)]
        if reasoning:
            message["reasoning_content"] = "".join(reasoning)
        return chunks.completion(message, o.finish_reason, usage(o.prompt_tokens, o.completion_tokens))

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_json(request)
        check_fields(body, chat=False)
        prompt = body["prompt"]
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise ApiError(400, "'prompt' must be one string", param="prompt")
        target, engine = pick(body)
        inputs = tokenizers[target.id](prompt, return_tensors=None if engine.use_cb else "pt")
        ids = inputs["input_ids"]
        n_prompt = len(ids) if engine.use_cb else int(ids.shape[-1])
        kwargs = kwargs_for(body, engine, n_prompt)
        slots.take()
        try:
            gen = Generation(engine, dict(inputs), kwargs, n_prompt, stops_of(body), None, "")
        except BaseException:
            slots.give()
            raise
        chunks = TextChunks(target.id)
        if body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            return EventStream(_text_stream(gen, chunks, include, slots), media_type="text/event-stream")
        try:
            text = "".join([p.text async for p in gen.pieces()])
        finally:
            slots.give()
        o = gen.outcome
        return chunks.obj(text, o.finish_reason, usage(o.prompt_tokens, o.completion_tokens))

    return app


def _template_messages(messages: Any) -> list[dict]:
    """OpenAI messages → chat-template messages (text parts joined, tool-call arguments as objects)."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            raise ApiError(400, f"messages[{i}] needs a role: system, user, assistant or tool", param=f"messages[{i}]")
        content = m.get("content") or ""
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        msg: dict = {"role": "system" if m["role"] == "developer" else m["role"], "content": content}
        calls = []
        for c in m.get("tool_calls") or []:
            fn = dict((c or {}).get("function") or {})
            if isinstance(fn.get("arguments"), str):
                try:
                    fn["arguments"] = json.loads(fn["arguments"] or "{}")
                except json.JSONDecodeError:
                    raise ApiError(400, f"messages[{i}]: tool call arguments are not valid JSON",
                                   param=f"messages[{i}].tool_calls") from None
            calls.append({"type": "function", "function": fn, **({"id": c["id"]} if c.get("id") else {})})
        if calls:
            msg["tool_calls"] = calls
        if m.get("tool_call_id"):
            msg["tool_call_id"] = m["tool_call_id"]
        out.append(msg)
    return out


async def _chat_stream(gen: Generation, chunks: ChatChunks, include_usage: bool, slots: Slots):
    """OpenAI's order: the role, content (or reasoning / tool-call) deltas, finish_reason, usage, [DONE]."""
    try:
        yield chunks.chunk({"role": "assistant", "content": ""})
        n = 0
        try:
            async for p in gen.pieces():
                if p.kind == "tool":
                    head = {"index": n, "id": f"call_{chunks.id[-12:]}_{n}", "type": "function",
                            "function": {"name": p.call.name, "arguments": ""}}
                    yield chunks.chunk({"tool_calls": [head]})
                    yield chunks.chunk({"tool_calls": [{"index": n, "function": {"arguments": p.call.arguments_json()}}]})
                    n += 1
                elif p.text:
                    yield chunks.chunk({"reasoning_content" if p.kind == "reasoning" else "content": p.text})
        except ApiError as exc:
            yield f"data: {json.dumps(exc.body())}\n\n"
            yield DONE
            return
        o = gen.outcome
        yield chunks.chunk({}, o.finish_reason)
        if include_usage:
            yield chunks.chunk(use=usage(o.prompt_tokens, o.completion_tokens))
        yield DONE
    finally:
        gen.cancel()
        slots.give()


async def _text_stream(gen: Generation, chunks: TextChunks, include_usage: bool, slots: Slots):
    try:
        try:
            async for p in gen.pieces():
                if p.text:
                    yield f"data: {json.dumps(chunks.obj(p.text), ensure_ascii=False)}\n\n"
        except ApiError as exc:
            yield f"data: {json.dumps(exc.body())}\n\n"
            yield DONE
            return
        o = gen.outcome
        yield f"data: {json.dumps(chunks.obj('', o.finish_reason))}\n\n"
        if include_usage:
            yield f"data: {json.dumps(chunks.obj(use=usage(o.prompt_tokens, o.completion_tokens)))}\n\n"
        yield DONE
    finally:
        gen.cancel()
        slots.give()
