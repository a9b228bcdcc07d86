"""Pseudonyms: a user id becomes a keyed hash (HMAC-SHA256) before anything is stored or logged.

Without the key a pseudonym cannot be linked back to a user id, not even by hashing guessed ids.
Rotation: the current key makes new pseudonyms; previous keys stay accepted for lookup and
forget, and a user found under an old pseudonym moves to the current one on their next event.
Once no user is left under an old key (after the inactivity limit at the latest), drop it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from pydantic import SecretStr

__all__ = ["Pseudonymiser"]


class Pseudonymiser:
    def __init__(self, key: SecretStr | str, previous: Sequence[SecretStr | str] = ()) -> None:
        keys = [k.get_secret_value() if isinstance(k, SecretStr) else k for k in (key, *previous)]
        if not keys[0]:
            raise ValueError("the pseudonym key must not be empty")
        self._keys = [k.encode() for k in keys if k]

    def __repr__(self) -> str:  # never the keys
        return f"Pseudonymiser(keys={len(self._keys)})"

    def pseudonym(self, user_id: str) -> str:
        """64 hex characters under the current key."""
        return self._digest(self._keys[0], user_id)

    def candidates(self, user_id: str) -> list[str]:
        """The user's pseudonym under every accepted key, the current one first."""
        return list(dict.fromkeys(self._digest(k, user_id) for k in self._keys))

    @staticmethod
    def _digest(key: bytes, user_id: str) -> str:
        return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()
