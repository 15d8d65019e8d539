"""`llm_call`: an OpenAI-compatible chat completions endpoint configured by the operator.

The endpoint is a peer like any upstream: its answer is read through backflow.peer_bodies (at
most BACKFLOW_UPSTREAM_MAX_BYTES once decoded; stacked or unknown encodings refused), parsed
strictly (backflow.jsonbody: no NaN or Infinity, nesting bounded), and the whole exchange, body
included, must end within the step's timeout (a server that trickles bytes does not hold a
worker).
"""

from urllib.parse import urlsplit

import anyio
import httpx
from django.conf import settings

from backflow.egress import EgressPolicy, EgressRefused, guarded_client
from backflow.jsonbody import JsonBodyError, parse_peer_json
from backflow.peer_bodies import ACCEPT_ENCODING, PeerBodyError, read_body


class LlmError(Exception):
    pass


async def complete(*, prompt, system=None, model=None, temperature=None, timeout=60.0):
    """The assistant's text for one prompt."""
    base_url = settings.BACKFLOW_LLM_BASE_URL
    if not base_url:
        raise LlmError("No LLM is configured: the operator sets BACKFLOW_LLM_BASE_URL (and _API_KEY, _MODEL).")
    model = model or settings.BACKFLOW_LLM_MODEL
    if not model:
        raise LlmError("No model named: set BACKFLOW_LLM_MODEL or give the tool or step a model.")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    body = {"model": model, "messages": messages}
    if temperature is not None:
        body["temperature"] = temperature
    headers = {"Accept-Encoding": ACCEPT_ENCODING}
    if settings.BACKFLOW_LLM_API_KEY:
        headers["Authorization"] = f"Bearer {settings.BACKFLOW_LLM_API_KEY}"
    try:
        with anyio.fail_after(timeout):
            async with _client(base_url, timeout) as client:
                async with client.stream("POST", base_url.rstrip("/") + "/chat/completions", json=body, headers=headers) as response:
                    status = response.status_code
                    raw = await read_body(response, limit=settings.BACKFLOW_UPSTREAM_MAX_BYTES, what="The LLM's answer",
                                          setting="BACKFLOW_UPSTREAM_MAX_BYTES")
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise LlmError(f"The LLM did not answer within {timeout:g} s.") from exc
    except PeerBodyError as exc:
        raise LlmError(str(exc)) from exc
    except EgressRefused as exc:
        raise LlmError(f"Cannot call the LLM: {exc}") from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise LlmError(f"Cannot reach the LLM ({exc.__class__.__name__}).") from exc
    if status >= 400:
        raise LlmError(f"The LLM answered {status}: {raw[:300].decode('utf-8', errors='replace')}")
    try:
        payload = parse_peer_json(raw)
    except JsonBodyError as exc:
        raise LlmError(f"The LLM's answer is not acceptable JSON: {exc}") from exc
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise LlmError("The LLM's answer is not a chat completion (no choices[0].message.content).") from exc
    if not isinstance(content, str):
        raise LlmError(f"The LLM's answer is not a chat completion (choices[0].message.content is {_kind(content)}, not text).")
    return content


def _kind(value):
    return {dict: "an object", list: "an array", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _client(base_url, timeout):
    """A guarded client that trusts the operator's LLM host by name (it may well be a private
    address, such as a model server next to the workers) and nothing else beyond the egress policy."""
    policy = EgressPolicy([*settings.BACKFLOW_EGRESS_ALLOW, urlsplit(base_url).hostname or ""])
    return guarded_client(policy=policy, timeout=timeout)
