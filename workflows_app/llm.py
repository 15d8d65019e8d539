"""`llm_call`: an OpenAI-compatible chat completions endpoint configured by the operator."""

from urllib.parse import urlsplit

import httpx
from django.conf import settings

from backflow.egress import EgressPolicy, guarded_client


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
    headers = {"Authorization": f"Bearer {settings.BACKFLOW_LLM_API_KEY}"} if settings.BACKFLOW_LLM_API_KEY else {}
    try:
        async with _client(base_url, timeout) as client:
            response = await client.post(base_url.rstrip("/") + "/chat/completions", json=body, headers=headers)
    except httpx.TimeoutException as exc:
        raise LlmError(f"The LLM did not answer within {timeout:g} s.") from exc
    except httpx.HTTPError as exc:
        raise LlmError(f"Cannot reach the LLM ({exc.__class__.__name__}).") from exc
    if response.status_code >= 400:
        raise LlmError(f"The LLM answered {response.status_code}: {response.text[:300]}")
    try:
        return response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise LlmError("The LLM's answer is not a chat completion (no choices[0].message.content).") from exc


def _client(base_url, timeout):
    """A guarded client that trusts the operator's LLM host by name (it may well be a private
    address, such as a model server next to the workers) and nothing else beyond the egress policy."""
    policy = EgressPolicy([*settings.BACKFLOW_EGRESS_ALLOW, urlsplit(base_url).hostname or ""])
    return guarded_client(policy=policy, timeout=timeout)
