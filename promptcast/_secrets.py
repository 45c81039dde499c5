"""The one set of credential patterns behind every scrubber and scanner in promptcast.

The cassette recorder, `promptcast scan-cassettes`, the server's log and problem bodies, batch
error lines and CLI stderr all call `scrub` / `find` here, so a key format taught once is caught
everywhere. A match keeps its context (the header or parameter name, a provider's key prefix) and
loses the secret, so a scrubbed line still says what was there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PLACEHOLDER",
    "PLACEHOLDERS",
    "SECRET_FIELDS",
    "SECRET_HEADERS",
    "SECRET_QUERY_PARAMS",
    "SecretMatch",
    "find",
    "is_placeholder",
    "scrub",
    "scrub_data",
    "scrub_literal",
]

PLACEHOLDER = "[REDACTED]"
PLACEHOLDERS = frozenset({PLACEHOLDER, "REDACTED", "<REDACTED>", "***"})
"""Values that are already scrubbed (cassettes store header values as bare `REDACTED`)."""

SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "x-goog-iam-authorization-token",
        "x-amz-security-token",
        "x-aws-ec2-metadata-token",
        "openai-organization",
        "openai-project",
        "anthropic-organization-id",
        "cookie",
        "set-cookie",
        "x-auth-token",
        "x-access-token",
        "x-subscription-token",
        "ocp-apim-subscription-key",
        "x-functions-key",
        "private-token",
        "x-vault-token",
    }
)
"""Request and response header names whose values are always secret (lower case)."""

SECRET_FIELDS = frozenset(
    {
        "api_key",
        "apikey",
        "api-key",
        "access_token",
        "refresh_token",
        "id_token",
        "client_secret",
        "password",
        "secret_key",
        "private_key",
        "aws_secret_access_key",
        "secret_access_key",
        "secretaccesskey",
        "aws_session_token",
        "session_token",
        "sessiontoken",
        "x-amz-security-token",
        "x-amz-signature",
        "x-amz-credential",
    }
)
"""Field, keyword and query-parameter names whose values are secret (lower case)."""

SECRET_QUERY_PARAMS = frozenset({"key", "token", "sig", "signature", "auth", *SECRET_FIELDS})
"""Query-string parameters that carry credentials (`?key=` is Google's)."""

# Token bodies: characters of URL-safe keys; `_B` stops a match from starting or ending inside a
# longer run of them (so base64 image data or ids are not cut into "keys").
_B = r"(?<![A-Za-z0-9_\-])"
_E = r"(?![A-Za-z0-9_\-])"

# (prefix, body pattern): the key formats of LLM providers, model hubs and code hosts.
_PREFIXED: tuple[tuple[str, str], ...] = (
    ("sk-ant-", r"[A-Za-z0-9_\-]{20,}"),  # Anthropic (api03-, admin01-, oat01-)
    ("sk-", r"[A-Za-z0-9_\-]{20,}"),  # OpenAI (proj-, svcacct-, admin-), DeepSeek, OpenRouter
    ("sk_", r"[A-Za-z0-9_]{24,}"),  # Stripe live/test, ElevenLabs, Novita
    ("rk_", r"(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe restricted
    ("gsk_", r"[A-Za-z0-9]{20,}"),  # Groq
    ("hf_", r"[A-Za-z0-9]{20,}"),  # Hugging Face
    ("api_org_", r"[A-Za-z0-9]{20,}"),  # Hugging Face org
    ("xai-", r"[A-Za-z0-9]{20,}"),  # xAI
    ("pplx-", r"[A-Za-z0-9]{20,}"),  # Perplexity
    ("r8_", r"[A-Za-z0-9]{20,}"),  # Replicate
    ("fw_", r"[A-Za-z0-9]{20,}"),  # Fireworks
    ("csk-", r"[A-Za-z0-9]{20,}"),  # Cerebras
    ("nvapi-", r"[A-Za-z0-9_\-]{20,}"),  # NVIDIA
    ("tgp_v1_", r"[A-Za-z0-9_\-]{20,}"),  # Together
    ("esecret_", r"[A-Za-z0-9]{20,}"),  # Anyscale
    ("pa-", r"[A-Za-z0-9_\-]{40,}"),  # Voyage
    ("jina_", r"[A-Za-z0-9_\-]{30,}"),  # Jina
    ("tvly-", r"[A-Za-z0-9_\-]{20,}"),  # Tavily
    ("fc-", r"[A-Fa-f0-9]{32}"),  # Firecrawl
    ("lsv2_", r"(?:pt|sk)_[A-Za-z0-9_]{20,}"),  # LangSmith
    ("pcsk_", r"[A-Za-z0-9_]{20,}"),  # Pinecone
    ("dapi", r"[a-f0-9]{32}"),  # Databricks
    ("ghp_", r"[A-Za-z0-9]{30,}"),  # GitHub classic tokens
    ("gho_", r"[A-Za-z0-9]{30,}"),
    ("ghu_", r"[A-Za-z0-9]{30,}"),
    ("ghs_", r"[A-Za-z0-9]{30,}"),
    ("ghr_", r"[A-Za-z0-9]{30,}"),
    ("github_pat_", r"[A-Za-z0-9_]{30,}"),  # GitHub fine-grained
    ("glpat-", r"[A-Za-z0-9_\-]{20,}"),  # GitLab
    ("npm_", r"[A-Za-z0-9]{36}"),  # npm
    ("pypi-", r"[A-Za-z0-9_\-]{50,}"),  # PyPI
    ("dop_v1_", r"[a-f0-9]{64}"),  # DigitalOcean
    ("xoxb-", r"[A-Za-z0-9\-]{10,}"),  # Slack
    ("xoxp-", r"[A-Za-z0-9\-]{10,}"),
    ("xoxa-", r"[A-Za-z0-9\-]{10,}"),
    ("xapp-", r"[A-Za-z0-9\-]{10,}"),
    ("ya29.", r"[A-Za-z0-9_\-]{20,}"),  # Google OAuth access token
)


@dataclass(frozen=True)
class _Pattern:
    kind: str
    regex: re.Pattern[str]
    keep_prefix: bool = False  # the part before group "secret" stays readable
    random_only: bool = False  # skip plain words ("bearer authentication")
    triggers: tuple[str, ...] = ()  # lower-case literals: the regex runs only if one is present


def _prefixed(prefix: str, body: str) -> _Pattern:
    return _Pattern(
        f"{prefix}… key",
        re.compile(_B + "(?P<prefix>" + re.escape(prefix) + ")(?P<secret>" + body + ")" + _E),
        keep_prefix=True,
        triggers=(prefix.lower(),),
    )


def _alternation(names: Iterable[str]) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


# A value after `name:` / `name=`: quoted (anything up to the quote), or bare (up to a quote,
# backslash or line end; bare values never start with a bracket so JSON structure survives).
_HEADER_VALUE = (
    r"(?:\"(?P<secret>[^\"\r\n]+)\"|'(?P<secret_q>[^'\r\n]+)'"
    r"|(?P<secret_b>[^\s\"'\[{\\][^\"'\r\n\\]*))"
)
_TOKEN_VALUE = (
    r"(?:\"(?P<secret>[^\s\"]{6,})\"|'(?P<secret_q>[^\s']{6,})'"
    r"|(?P<secret_b>[^\s\"'\[{\\,;&)}\]]{6,}))"
)

_PATTERNS: tuple[_Pattern, ...] = (
    _Pattern(
        "private key",
        re.compile(
            r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----(?:\\+[nr]|\s)*(?P<secret>[^-]+?)"
            r"(?:\\+[nr]|\s)*-----END (?:[A-Z]+ )*PRIVATE KEY-----",
            re.DOTALL,
        ),
        triggers=("private key",),
    ),
    _Pattern(
        "secret header",
        re.compile(
            r"(?i:(?<![A-Za-z0-9_\-])(?:" + _alternation(SECRET_HEADERS) + r"))[\"']?[ \t]*:[ \t]*"
            r"\[?[ \t]*" + _HEADER_VALUE
        ),
        triggers=tuple(SECRET_HEADERS),
    ),
    _Pattern(
        "AWS SigV4 signature",
        re.compile(r"AWS4-HMAC-SHA256[ \t]+(?P<secret>Credential=[^\"'\r\n\\]+)"),
        triggers=("aws4-hmac-sha256",),
    ),
    _Pattern(
        "secret query parameter",
        re.compile(
            r"[?&;](?i:" + _alternation(SECRET_QUERY_PARAMS) + r")=(?P<secret>[^&\s\"'#\\<>]{4,})"
        ),
        triggers=("?", "&", ";"),
    ),
    _Pattern(
        "secret field",
        re.compile(
            r"(?<![A-Za-z0-9_\-])[\"']?(?i:" + _alternation(SECRET_FIELDS) + r")[\"']?[ \t]*[:=]"
            r"[ \t]*" + _TOKEN_VALUE
        ),
        random_only=True,
        triggers=tuple(SECRET_FIELDS),
    ),
    _Pattern(
        "secret environment variable",
        re.compile(
            r"\b[A-Z][A-Z0-9_]*(?:API_KEYS?|SECRET(?:_ACCESS)?_KEY|SECRET|SESSION_TOKEN|AUTH_TOKEN"
            r"|ACCESS_TOKEN|API_TOKENS?|PASSWORD)[ \t]*=[ \t]*" + _TOKEN_VALUE
        ),
        random_only=True,
        triggers=(
            "api_key",
            "api_token",
            "secret",
            "session_token",
            "auth_token",
            "access_token",
            "password",
        ),
    ),
    _Pattern(
        "URL password",
        re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@\"']*:(?P<secret>[^/\s@\"']+)@"),
        triggers=("://",),
    ),
    _Pattern(
        "bearer token",
        re.compile(r"(?i:\bbearer)(?:[ \t]+|%20)(?P<secret>[A-Za-z0-9._~+/=\-]{8,})"),
        random_only=True,
        triggers=("bearer",),
    ),
    _Pattern(
        "JWT",
        re.compile(
            _B + r"(?P<secret>eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*)"
        ),
        triggers=("eyj",),
    ),
    _Pattern(
        "AWS access key id",
        re.compile(
            r"(?<![A-Za-z0-9])(?P<prefix>AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])(?P<secret>[A-Z0-9]{16})"
            r"(?![A-Za-z0-9])"
        ),
        keep_prefix=True,
        triggers=("akia", "asia", "abia", "acca", "a3t"),
    ),
    _Pattern(
        "AWS session token",
        re.compile(
            r"(?<![A-Za-z0-9+/])(?P<secret>(?:IQoJb3JpZ2lu|FwoGZXIvYXdz)[A-Za-z0-9+/=%]{20,})"
        ),
        triggers=("iqojb3jpz2lu", "fwogzxivyxdz"),
    ),
    _Pattern(
        "Google API key",
        re.compile(r"(?<![A-Za-z0-9_\-])(?P<prefix>AIza)(?P<secret>[0-9A-Za-z_\-]{35})" + _E),
        keep_prefix=True,
        triggers=("aiza",),
    ),
    _Pattern(
        "Alibaba access key id",
        re.compile(
            r"(?<![A-Za-z0-9])(?P<prefix>LTAI)(?P<secret>[A-Za-z0-9]{12,30})(?![A-Za-z0-9])"
        ),
        keep_prefix=True,
        triggers=("ltai",),
    ),
    *(_prefixed(prefix, body) for prefix, body in _PREFIXED),
)


@dataclass(frozen=True)
class SecretMatch:
    """One credential found in a text: what kind, and where (`start`/`end` of the secret part;
    `prefix` is a provider's key prefix, kept by `scrub`)."""

    kind: str
    start: int
    end: int
    value: str
    prefix: str = ""

    @property
    def masked(self) -> str:
        """Enough to recognise which key it was, never the key: its prefix, or 4 characters."""
        if self.prefix:
            return self.prefix + "…"
        return self.value[:4] + "…" if len(self.value) > 8 else "…"


def is_placeholder(value: str) -> bool:
    """True for an empty or already-scrubbed value (`REDACTED`, `Bearer [REDACTED]`, ...)."""
    text = value.strip().strip("\"'[]").strip()
    if not text or text in PLACEHOLDERS or value.strip() in PLACEHOLDERS:
        return True
    last = text.split()[-1].strip("\"'[]")
    return last in PLACEHOLDERS or last.endswith("REDACTED")


def _looks_random(value: str) -> bool:
    """A token, not a word: a digit, mixed case inside, or long (`bearer authentication` and
    `password: resetting` are prose)."""
    if len(value) >= 24 or any(c.isdigit() for c in value):
        return True
    return any(c.isupper() for c in value[1:]) and any(c.islower() for c in value)


def _secret_span(match: re.Match[str]) -> tuple[int, int] | None:
    for name in ("secret", "secret_q", "secret_b"):
        if name in match.re.groupindex and match.group(name) is not None:
            return match.span(name)
    return None


def find(text: str) -> list[SecretMatch]:
    """Every credential in `text`, in order, without overlaps (the earliest, widest match wins;
    on a tie, the more specific pattern)."""
    candidates: list[tuple[int, int, int, SecretMatch]] = []
    lowered = text.lower()
    for order, pattern in enumerate(_PATTERNS):
        if pattern.triggers and not any(t in lowered for t in pattern.triggers):
            continue
        for match in pattern.regex.finditer(text):
            span = _secret_span(match)
            if span is None or span[0] == span[1]:
                continue
            value = text[span[0] : span[1]].rstrip()
            span = (span[0] + len(value) - len(value.lstrip()), span[1])
            value = value.lstrip()
            if is_placeholder(value) or (pattern.random_only and not _looks_random(value)):
                continue
            prefix = match.group("prefix") if pattern.keep_prefix else ""
            found = SecretMatch(pattern.kind, span[0], span[0] + len(value), value, prefix)
            candidates.append((match.start(), -match.end(), order, found))
    candidates.sort(key=lambda c: c[:3])
    kept: list[SecretMatch] = []
    reach = 0
    for start, negative_end, _, found in candidates:
        if start < reach:
            continue
        kept.append(found)
        reach = -negative_end
    return kept


def scrub(text: str) -> str:
    """`text` with every credential replaced by `[REDACTED]`; names and key prefixes stay."""
    if not text:
        return text
    parts: list[str] = []
    last = 0
    for match in find(text):
        parts.append(text[last : match.start])
        parts.append(PLACEHOLDER)
        last = match.end
    parts.append(text[last:])
    return "".join(parts)


def scrub_literal(text: str, secrets: Iterable[str]) -> str:
    """`text` with known secret values (configured keys, tokens) and every pattern scrubbed."""
    for secret in sorted(
        {s.strip() for s in secrets if len(s.strip()) >= 4}, key=len, reverse=True
    ):
        text = text.replace(secret, PLACEHOLDER)
    return scrub(text)


def scrub_data(data: Any) -> Any:
    """A copy of parsed JSON with secret-named fields replaced and every string scrubbed.

    Scrubbing the parsed value (not its JSON text) keeps the document valid JSON.
    """
    if isinstance(data, dict):
        return {
            key: (
                PLACEHOLDER
                if isinstance(key, str)
                and _is_secret_name(key)
                and isinstance(value, str)
                and not is_placeholder(value)
                else scrub_data(value)
            )
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [scrub_data(item) for item in data]
    if isinstance(data, str):
        return scrub(data)
    return data


def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_HEADERS or lowered in SECRET_FIELDS
