"""Teacher accounts: scrypt password hashes, sign-in, token revocation on a password change,
API keys encrypted at rest (Fernet with AIRCLASS_DATA_KEY, see airclass_web.crypto)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import time
from pathlib import Path

from cryptography.fernet import InvalidToken, MultiFernet

from ..crypto import DataKeyError, data_cipher, dev_data_keys
from ..store import DuplicateError, Store
from .errors import ClassroomError

USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}\Z")  # \Z, not $ (trailing newline)
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
# scrypt parameters: ~16 MiB, ~50 ms per hash.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.urlsafe_b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.urlsafe_b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ClassroomError(400, f"password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ClassroomError(400, "password too long")


class TeacherService:
    def __init__(self, store: Store, data_keys: str = "", *, dev_key_dir: Path | None = None):
        """data_keys: AIRCLASS_DATA_KEY; dev_key_dir: under --dev, where a key file may be
        made when there is none."""
        self.store = store
        self._data_keys = data_keys
        self._dev_key_dir = dev_key_dir
        self._cipher: MultiFernet | None = None
        # A hash to spend the same time on unknown usernames (no user enumeration).
        self._dummy_hash = hash_password(secrets.token_hex(8))

    async def add(self, username: str, password: str, *, replace: bool = False) -> dict:
        if not USERNAME.match(username):
            raise ClassroomError(400, "username: 1-64 letters, digits, '_', '.', '@' or '-'")
        check_new_password(password)
        hashed = await asyncio.to_thread(hash_password, password)
        existing = await self.store.get_teacher(username)
        if existing is not None:
            if not replace:
                raise ClassroomError(409, f"teacher {username} already exists")
            # A new password revokes every token issued before it.
            return await self.store.update(
                "teachers",
                existing["id"],
                {"password_hash": hashed, "tokens_valid_after": time.time()},
            )
        now = time.time()
        doc = {
            "id": username,
            "username": username,
            "password_hash": hashed,
            "created_at": now,
            # Tokens for this name from before the account existed (bootstrap, --dev) die.
            "tokens_valid_after": now,
        }
        try:
            return await self.store.insert("teachers", doc)
        except DuplicateError as exc:
            raise ClassroomError(409, f"teacher {username} already exists") from exc

    async def authenticate(self, username: str, password: str) -> dict | None:
        """The teacher document when the password matches, else None."""
        if not username or not password or len(password) > MAX_PASSWORD:
            return None
        teacher = await self.store.get_teacher(username) if USERNAME.match(username) else None
        encoded = teacher["password_hash"] if teacher else self._dummy_hash
        ok = await asyncio.to_thread(verify_password, password, encoded)
        return teacher if ok and teacher else None

    async def count(self) -> int:
        return await self.store.count_teachers()

    async def list(self) -> list[dict]:
        return await self.store.find("teachers", order_by="username")

    def _require_fernet(self) -> MultiFernet:
        if self._cipher is None:
            keys = self._data_keys
            if not keys and self._dev_key_dir is not None:
                keys = dev_data_keys(self._dev_key_dir)
            if not keys:
                raise ClassroomError(
                    503,
                    "AI keys are stored encrypted with AIRCLASS_DATA_KEY, which is not set "
                    "on this node: set it (a Fernet key) to store API keys",
                    code="no_data_key",
                )
            try:
                self._cipher = data_cipher(keys)
            except DataKeyError as exc:
                raise ClassroomError(503, str(exc), code="no_data_key") from exc
        return self._cipher

    def encrypt_secret(self, secret: str) -> str:
        """A secret (an AI provider key) encrypted with AIRCLASS_DATA_KEY, as text."""
        return self._require_fernet().encrypt(secret.encode()).decode()

    def decrypt_secret(self, token: str) -> str:
        try:
            return self._require_fernet().decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ClassroomError(
                500, "API key cannot be decrypted (AIRCLASS_DATA_KEY changed?)"
            ) from exc
