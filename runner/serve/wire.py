"""OpenAI's wire format: request checks, errors, and the objects and chunks the server sends.

Kept apart from generation so the rules a client relies on (which fields are taken, which are
refused with a 400 naming them, the error shape) are in one short place.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any


class ApiError(Exception):
    """An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
             413: "invalid_request_error", 429: "rate_limit_error", 503: "server_error", 500: "server_error"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


# Fields taken as they are; fields taken only at their neutral value (anything else is refused).
SHARED = {"model", "stream", "stream_options", "max_tokens", "temperature", "top_p", "stop", "seed", "user"}
NEUTRAL = {"n": (1,), "presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0), "logprobs": (None, False),
           "top_logprobs": (None, 0), "logit_bias": (None, {}), "best_of": (None, 1), "echo": (None, False),
           "suffix": (None,), "response_format": (None, {"type": "text"}), "service_tier": (None, "auto"),
           "parallel_tool_calls": (None, True, False), "store": (None, False), "metadata": (None, {})}
CHAT_ONLY = {"messages", "max_completion_tokens", "tools", "tool_choice"}
COMPLETION_ONLY = {"prompt"}
WHY = {"n": "one choice per request (send n requests)", "presence_penalty": "continuous batching has no penalties",
       "frequency_penalty": "continuous batching has no penalties", "logit_bias": "continuous batching has no logit bias",
       "logprobs": "log probabilities are not returned", "top_logprobs": "log probabilities are not returned"}


def check_fields(body: Any, chat: bool) -> None:
    """Refuse unknown fields and settings this server cannot honour, naming them (never ignored silently)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    known = SHARED | (CHAT_ONLY if chat else COMPLETION_ONLY)
    for key, value in body.items():
        if key in known:
            continue
        if key in NEUTRAL:
            if value in NEUTRAL[key]:
                continue
            raise ApiError(400, f"'{key}' = {json.dumps(value)} is not supported by this server"
                           + (f": {WHY[key]}" if key in WHY else ""), param=key, code="unsupported_parameter")
        raise ApiError(400, f"unknown field '{key}'", param=key, code="unknown_parameter")
    need = "messages" if chat else "prompt"
    if need not in body:
        raise ApiError(400, f"'{need}' is required", param=need, code="missing_required_parameter")
    for key, kind, lo, hi in (("temperature", float, 0, 2), ("top_p", float, 0, 1), ("max_tokens", int, 1, None),
                              ("max_completion_tokens", int, 1, None), ("seed", int, None, None)):
        v = body.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not float(v).is_integer()):
            raise ApiError(400, f"'{key}' must be {'an integer' if kind is int else 'a number'}", param=key)
        if (lo is not None and v < lo) or (hi is not None and v > hi) or (key == "top_p" and v == 0):
            raise ApiError(400, f"'{key}' = {v} is out of range", param=key)
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 4
                                                              and all(isinstance(s, str) and s for s in stop))):
        raise ApiError(400, "'stop' must be a string or a list of up to 4 strings", param="stop")
    if body.get("tool_choice") not in (None, "auto", "none"):
        raise ApiError(400, "'tool_choice' may be 'auto' or 'none' here: the model decides when to call a tool",
                       param="tool_choice", code="unsupported_parameter")


def stops_of(body: dict) -> list[str]:
    stop = body.get("stop")
    return [stop] if isinstance(stop, str) else list(stop or [])


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ChatChunks:
    """chat.completion.chunk objects of one stream, all with the same id, created and model."""

    def __init__(self, model: str):
        self.id, self.created, self.model = new_id("chatcmpl"), int(time.time()), model

    def chunk(self, delta: dict | None = None, finish: str | None = None, use: dict | None = None) -> str:
        choices = [] if use is not None else [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
        out = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
               "system_fingerprint": None, "choices": choices}
        if use is not None:
            out["usage"] = use
        return sse(out)

    def completion(self, message: dict, finish: str, use: dict) -> dict:
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}], "usage": use}


class TextChunks:
    """text_completion objects of one /v1/completions request."""

    def __init__(self, model: str):
        self.id, self.created, self.model = new_id("cmpl"), int(time.time()), model

    def obj(self, text: str = "", finish: str | None = None, use: dict | None = None) -> dict:
        out = {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
               "system_fingerprint": None,
               "choices": [] if use is not None and not text and finish is None
               else [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}
        if use is not None:
            out["usage"] = use
        return out
