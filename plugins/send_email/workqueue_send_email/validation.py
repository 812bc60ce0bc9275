"""Checks that keep header injection out of the e-mails this plugin builds.

Every string that ends up in a header (addresses, subject) passes :func:`check_header_text`:
no control characters (CR, LF, NUL, ...), no Unicode line separators, and no RFC 2047 encoded
word that *decodes* to one (``=?UTF-8?Q?=0A?=``), since some mail software decodes those and
would see a new header line. Addresses must be a plain ``local-part@domain`` (a strict subset of
RFC 5322 ``addr-spec``): no display name, comment, quoted local part, group or list, so a single
string can never smuggle a second recipient.

Error messages name the field, never its value (payload values are not logged).
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = [
    "MAX_ADDRESS_LENGTH",
    "MAX_SUBJECT_LENGTH",
    "check_address",
    "check_header_text",
    "domain_of",
]

MAX_ADDRESS_LENGTH = 254
MAX_SUBJECT_LENGTH = 998

# C0 and C1 control characters (CR, LF, TAB, NUL, DEL, NEL...) and the Unicode line and
# paragraph separators: none of them belongs in a header value.
_FORBIDDEN_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# An RFC 2047 encoded word, found anywhere (not only between spaces, as lenient decoders do).
_ENCODED_WORD = re.compile(r"=\?([^?\s]*)\?([A-Za-z])\?([^?]*)\?=")
# RFC 5322 atext: the characters of an unquoted local part.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _decode_encoded_word(encoding: str, text: str) -> bytes:
    if encoding in "Qq":
        return binascii.a2b_qp(text.encode("ascii", "replace"), header=True)
    if encoding in "Bb":
        padded = text + "=" * (-len(text) % 4)
        try:
            return base64.b64decode(padded.encode("ascii", "replace"), validate=False)
        except (binascii.Error, ValueError):
            return b""
    return b""


def check_header_text(value: str, field: str) -> None:
    """Raise ``ValueError`` if ``value`` could start a new header line once sent or decoded."""
    if _FORBIDDEN_CHARS.search(value):
        raise ValueError(f"{field}: line breaks and control characters are not allowed")
    for match in _ENCODED_WORD.finditer(value):
        decoded = _decode_encoded_word(match.group(2), match.group(3))
        charset = match.group(1).split("*", 1)[0] or "utf-8"
        try:
            text = decoded.decode(charset, "replace")
        except LookupError:
            text = decoded.decode("utf-8", "replace")
        if b"\r" in decoded or b"\n" in decoded or b"\x00" in decoded:
            raise ValueError(f"{field}: encoded words must not contain line breaks")
        if _FORBIDDEN_CHARS.search(text):
            raise ValueError(f"{field}: encoded words must not contain control characters")


def check_address(value: str, field: str) -> str:
    """Return ``value`` if it is a plain ``local-part@domain`` address, else raise ``ValueError``.

    Accepted: an unquoted dot-atom local part of at most 64 characters, ``@``, and a domain of
    ASCII letter-digit-hyphen labels (internationalised domains in their ``xn--`` form).
    """
    check_header_text(value, field)
    if len(value) > MAX_ADDRESS_LENGTH:
        raise ValueError(f"{field}: address longer than {MAX_ADDRESS_LENGTH} characters")
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"{field}: not an e-mail address (expected local-part@domain)")
    if len(local) > 64 or not _LOCAL_PART.fullmatch(local):
        raise ValueError(
            f"{field}: only a plain address local-part@domain is accepted "
            "(no display name, comment, quotes, spaces, commas or second '@')"
        )
    labels = domain.split(".")
    if not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"{field}: the domain must be ASCII letters, digits, hyphens and dots "
            "(write internationalised domains in their xn-- form)"
        )
    if labels[-1].isdigit():
        raise ValueError(f"{field}: the domain must be a name, not an IP address")
    return value


def domain_of(address: str) -> str:
    """The lower-cased domain of an address that passed :func:`check_address`."""
    return address.rpartition("@")[2].lower()
