"""Personal data in the pipeline: keyed pseudonyms for callers, masked numbers in free text.

* **Pseudonyms.** A caller's phone number becomes ``caller-<key id>-<HMAC-SHA256 of the digits>``
  under a secret key the operator configures (``CITYGRID_PII_KEY``). Without the key the
  pseudonym cannot be reversed by enumerating the ~10^10 mainland mobile numbers, and two
  deployments with different keys give different pseudonyms for one caller. The key id (a short
  public digest of the key) prefixes each pseudonym, so after a key rotation old and new
  pseudonyms are told apart; erasure computes a caller's pseudonym under every known key.
* **Masking.** Phone numbers (mobiles, landlines with an area code, numbers after a cue such as
  电话/手机), 身份证 numbers and other long digit runs typed into free text are masked where the
  text is stored or sent, keeping the first 3 and last 4 digits of a mobile (``138****5678``) so
  a department can still match a caller who rings back.

The core gets keys passed in; it never reads settings or the environment.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MIN_KEY_CHARS = 32          # an HMAC key shorter than this is refused (a typo, not a secret)
PSEUDONYM_PREFIX = "caller"
KEY_ID_HEX = 6
PSEUDONYM_HEX = 20          # 80 bits: no collisions among a city's callers
MASK = "*"


class PseudonymKeyError(ValueError):
    """A pseudonym key that is unusable (too short); the message says what is expected."""


@dataclass(frozen=True)
class PseudonymKey:
    """One secret with its public key id (``key_id`` = first hex digits of a digest of the secret)."""

    secret: bytes
    key_id: str

    @classmethod
    def from_secret(cls, secret: str | bytes) -> PseudonymKey:
        raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        raw = raw.strip()
        if len(raw) < MIN_KEY_CHARS:
            raise PseudonymKeyError(f"a pseudonym key needs at least {MIN_KEY_CHARS} characters, got {len(raw)} "
                            "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        key_id = hashlib.sha256(b"citygrid-pii-key-id\x00" + raw).hexdigest()[:KEY_ID_HEX]
        return cls(raw, key_id)

    @classmethod
    def ephemeral(cls) -> PseudonymKey:
        """A random key for one process (``streams replay``, tests): pseudonyms are not stable
        across runs, and nobody can reverse them."""
        return cls.from_secret(secrets.token_urlsafe(32))

    def __repr__(self) -> str:  # never print the secret
        return f"PseudonymKey(key_id={self.key_id!r})"


_NON_DIGIT = re.compile(r"\D")
_PHONE_LIKE = re.compile(r"[0-9０-９+＋()（）\s.\-]+")


def phone_digits(phone: str) -> str:
    """The digits of a phone number, without a mainland country prefix (+86 / 0086 / 86 before a mobile):
    ``+86 138-1234-5678`` and ``13812345678`` are one caller."""
    digits = _NON_DIGIT.sub("", phone)
    digits = digits.translate(_FULLWIDTH)
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and len(digits) == len(prefix) + 11 and digits[len(prefix)] == "1":
            return digits[len(prefix):]
    return digits


class Pseudonymizer:
    """Callers' numbers → pseudonyms under the current key; ``every_pseudonym`` adds the previous keys
    (for erasure after a rotation)."""

    def __init__(self, current: PseudonymKey, previous: Iterable[PseudonymKey] = ()) -> None:
        self.current = current
        self.previous = tuple(k for k in previous if k.key_id != current.key_id)

    @classmethod
    def ephemeral(cls) -> Pseudonymizer:
        return cls(PseudonymKey.ephemeral())

    @staticmethod
    def _under(key: PseudonymKey, phone: str) -> str:
        digits = phone_digits(phone) or phone.strip()
        # hmac.digest: the one-shot C HMAC, the same bytes as hmac.new(...).digest() at a third of the cost
        mac = hmac.digest(key.secret, b"caller\x00" + digits.encode("utf-8"), "sha256").hex()
        return f"{PSEUDONYM_PREFIX}-{key.key_id}-{mac[:PSEUDONYM_HEX]}"

    def caller(self, phone: str) -> str:
        """The caller's pseudonym under the current key (same caller, same pseudonym)."""
        return self._under(self.current, phone)

    def reporter(self, identifier: str) -> str:
        """A citizen known by a phone number (the same pseudonym as :meth:`caller`: one person across the
        hotline and the apps), an email or an app account id (case-insensitive)."""
        text = identifier.strip()
        if _PHONE_LIKE.fullmatch(text) and len(phone_digits(text)) >= 7:
            return self.caller(text)
        mac = hmac.new(self.current.secret, b"reporter\x00" + text.lower().encode("utf-8"), hashlib.sha256).hexdigest()
        return f"{PSEUDONYM_PREFIX}-{self.current.key_id}-{mac[:PSEUDONYM_HEX]}"

    def every_pseudonym(self, phone: str) -> list[str]:
        """The caller's pseudonym under the current and every previous key."""
        return [self._under(k, phone) for k in (self.current, *self.previous)]


# ---------------------------------------------------------------- masking

_FULLWIDTH = str.maketrans("０１２３４５６７８９", "0123456789")
_D = r"[0-9０-９]"        # ASCII and full-width digits (a caller's IME may type either)
_SEP = r"[ \-‐－—.]"      # separators people put inside numbers
# A mobile: optional +86/0086/86 prefix, 1[3-9]x then 8 digits, in groups of any separation.
_MOBILE = (rf"(?P<mcc>(?:\+|＋|00)?86{_SEP}?)?(?P<mobile>[1１][3-9３-９]{_D}(?:{_SEP}?{_D}){{8}})")
# A landline with its area code: 0xx(x)-xxxxxxx(x), optional extension.
_LANDLINE = rf"(?P<landline>[0０]{_D}{{2,3}}{_SEP}?{_D}{{7,8}}(?:{_SEP}?(?:转|ext\.?|x){_D}{{1,5}})?)"
# 身份证: 18 characters (17 digits + digit or X) or the old 15 digits, also grouped 6-8-4.
_ID = rf"(?P<id>{_D}{{6}}{_SEP}?{_D}{{8}}{_SEP}?{_D}{{3}}[0-9０-９Xx]|{_D}{{15}})"
# After a cue word any run of 7+ digits is a number someone can be reached at.
_CUE = r"(?:电话|手机|手机号|联系方式|联系电话|号码|座机|微信|tel|Tel|TEL|phone|Phone|☎|📞)"
_CUED = rf"(?P<cue>{_CUE}\s*[:：是为]?\s*)(?P<cued>{_D}(?:{_SEP}?{_D}){{6,}})"
# Anything else with 9 or more digits in a row (malformed mobiles, bank cards, QQ numbers ...).
_LONG = rf"(?P<long>{_D}{{9,}})"
# Digits glued to letters count too ("wx13812345678"): this runs on free text only, never on ids.
_NUMBERS = re.compile(rf"(?<![0-9０-９])(?:{_ID}|{_MOBILE}|{_LANDLINE}|{_LONG})(?![0-9０-９])|{_CUED}")


def _mask_digits(span: str, keep_head: int, keep_tail: int) -> str:
    """Replace the digits of ``span`` by ``*`` except the first ``keep_head`` and last ``keep_tail``
    digits; separators stay where they were (``138 1234 5678`` → ``138 **** 5678``)."""
    positions = [i for i, ch in enumerate(span) if ch.isdigit() or ch in "Xx"]
    n = len(positions)
    if keep_head + keep_tail >= n:   # short numbers: keep at most the last 4, and never all of it
        keep_head, keep_tail = 0, max(0, min(keep_tail, n - 4))
    hidden = set(positions[keep_head:n - keep_tail])
    return "".join(MASK if i in hidden else ch for i, ch in enumerate(span))


def _replace(match: re.Match[str]) -> str:
    groups = match.groupdict()
    if groups.get("cue") is not None:
        cued = groups["cued"]
        inner = _NUMBERS.sub(_replace, cued)   # a mobile after the cue keeps its 138****5678 shape
        return groups["cue"] + (inner if inner != cued else _mask_digits(cued, 0, 4))
    if groups.get("mobile") is not None:
        return (groups.get("mcc") or "") + _mask_digits(groups["mobile"], 3, 4)
    if groups.get("id") is not None:
        return _mask_digits(groups["id"], 3, 4)
    if groups.get("landline") is not None:
        text = groups["landline"]
        area = re.match(rf"[0０]{_D}{{2,3}}", text)
        head = len(area.group()) if area else 0
        return _mask_digits(text, head, 4)
    return _mask_digits(groups["long"], 3, 4)


# Every pattern above needs a run of at least 7 digits (separators allowed between them): a text
# without one has nothing to mask, and most texts (a door number, a date) have none.
_MAYBE_NUMBER = re.compile(rf"{_D}(?:{_SEP}?{_D}){{6}}")


def mask_text(text: str) -> str:
    """Free text with phone numbers, 身份证 numbers and other long digit runs masked."""
    if not text or _MAYBE_NUMBER.search(text) is None:
        return text
    return _NUMBERS.sub(_replace, text)


def mask_optional(text: str | None) -> str | None:
    return None if text is None else mask_text(text)


# Free-text fields of the records (raw feeds, actions, transitions): masked wherever they are kept.
# Identifiers (case ids, street codes, device ids) are not free text and keep their digits.
FREE_TEXT_FIELDS = ("text", "address", "note", "detail", "description", "address_string", "status_notes")


def mask_fields(record: Mapping[str, Any], fields: Iterable[str] = FREE_TEXT_FIELDS) -> dict[str, Any]:
    """A copy of ``record`` with its free-text fields masked (other fields as they are)."""
    out = dict(record)
    for name in fields:
        value = out.get(name)
        if isinstance(value, str):
            out[name] = mask_text(value)
    return out
