"""The clients and requests the U-ON emulator knows without being told (deterministic).

Every phone number (or client id) whose last digit is even is a known client, every odd
one is unknown: tests choose the answer by the number they dial. A known client's
fields come from fixed lists picked by a hash of its digits, so the same number always
gives the same name, manager and e-mail, in every process.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

FIRST_NAMES = ("Анна", "Иван", "Ольга", "Павел", "Мария", "Сергей", "Елена", "Дмитрий")
SURNAMES = ("Иванова", "Петров", "Соколова", "Кузнецов", "Новикова", "Морозов", "Волкова")
PATRONYMICS = ("Сергеевна", "Андреевич", "Олеговна", "Игоревич", "Павловна", "Николаевич")
COMPANIES = ("", "", "", "ООО «Вояж»", "ИП Орлов")
MANAGER_IDS = ("2", "4")
REQUEST_STATUSES = ("new", "in_work", "booked")
_NOT_DIGITS = re.compile(r"\D")


def digits_of(value: Any) -> str:
    """The digits of a phone number or id as given (``+375 29 …`` → ``37529…``)."""
    return _NOT_DIGITS.sub("", str(value or ""))


def known(digits: str) -> bool:
    """Whether the emulator knows a client (or request) by default: last digit even."""
    return bool(digits) and digits[-1] in "02468"


def _hash(digits: str) -> bytes:
    return hashlib.sha256(digits.encode()).digest()


def default_client(digits: str) -> dict[str, Any]:
    """The client behind an even number or id: ``u_id`` and phone are its digits."""
    h = _hash(digits)
    return {
        "u_id": digits,
        "u_name": FIRST_NAMES[h[0] % len(FIRST_NAMES)],
        "u_surname": SURNAMES[h[1] % len(SURNAMES)],
        "u_sname": PATRONYMICS[h[2] % len(PATRONYMICS)],
        "u_phone": "+" + digits,
        "u_phone_mobile": "+" + digits,
        "u_email": f"client{digits[-6:]}@example.com",
        "manager_id": MANAGER_IDS[h[3] % len(MANAGER_IDS)],
        "u_company": COMPANIES[h[4] % len(COMPANIES)],
        "u_status": "active",
    }


def default_request(request_id: str) -> dict[str, Any]:
    """The (active) travel request behind an even request id; its client is known too."""
    h = _hash("request:" + request_id)
    client = 100_000 + 2 * (int.from_bytes(h[:3], "big") % 450_000)
    return {
        "id": request_id,
        "client_id": str(client),
        "status": REQUEST_STATUSES[h[3] % len(REQUEST_STATUSES)],
        "manager_id": MANAGER_IDS[h[4] % len(MANAGER_IDS)],
        "date_begin": f"2026-12-{1 + h[5] % 28:02d}",
        "dat": "2026-11-30 09:00:00",
        "source": "Сайт",
    }


def phones_of(user: dict[str, Any]) -> set[str]:
    """The digits of a stored client's phone numbers."""
    return {d for d in (digits_of(user.get("u_phone")), digits_of(user.get("u_phone_mobile"))) if d}
