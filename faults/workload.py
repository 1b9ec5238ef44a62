"""The fault suite's workload: what the producer sends, and what each message should become.

Seeded: the same seed gives the same messages in the same order (transfer ids too, so
a failing run can be replayed exactly). Besides contended transfers among a few
accounts it mixes in the traffic a real queue sees:

- exact duplicates (the same transfer id and body, sent again later);
- conflicting duplicates (a used transfer id with another amount);
- transfers without ``transfer_id`` (the SQS message id becomes the key);
- unknown accounts, and well-formed but invalid amounts (negative, over-precise):
  these get a recorded ``rejected`` result like any other request;
- malformed bodies (not JSON, wrong types, missing fields, huge ids): these must end
  up in the DLQ and nowhere else.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from worker.contract import encode_body

MALFORMED_BODIES = (
    "not json at all",
    '{"payer_id": "1", "payee_id": 2, "amount": "1.00"}',
    '{"payer_id": 1, "payee_id": 2}',
    '{"payer_id": 1, "payee_id": 1099511627776, "amount": "1.00"}',
    '{"payer_id": 1, "payee_id": 2, "amount": "one"}',
    '{"payer_id": 1.5, "payee_id": 2, "amount": 1}',
    "[1, 2, 3]",
    "{}",
    '{"payer_id": 1, "payee_id": 2, "amount": "1.00", "transfer_id": "nope"}',
    '{"payer_id": true, "payee_id": 2, "amount": "1.00"}',
)


class Kind(StrEnum):
    """What a message is meant to exercise."""

    TRANSFER = "transfer"
    DUPLICATE = "duplicate"
    CONFLICT = "conflicting duplicate"
    NO_ID = "transfer without transfer_id"
    UNKNOWN_ACCOUNT = "unknown account"
    INVALID_AMOUNT = "invalid amount"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Message:
    """One message to send. ``transfer_id`` is None for malformed and id-less bodies."""

    body: str
    kind: Kind
    transfer_id: uuid.UUID | None


@dataclass
class Workload:
    """The messages, in send order, and how many of each kind."""

    messages: list[Message] = field(default_factory=list)
    accounts: int = 5

    def count(self, kind: Kind) -> int:
        """How many messages of ``kind`` there are."""
        return sum(m.kind is kind for m in self.messages)


def build(seed: int, transfers: int, accounts: int = 5) -> Workload:
    """``transfers`` contended transfers among ``accounts`` accounts plus about 10 %
    of duplicates, conflicts, id-less, unknown-account, invalid and malformed messages."""
    rng = random.Random(seed)
    workload = Workload(accounts=accounts)
    sent: list[Message] = []

    def new_id() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4)

    def transfer(payer: int, payee: int, amount: Decimal, tid: uuid.UUID | None) -> str:
        if tid is None:
            return json.dumps({"payer_id": payer, "payee_id": payee, "amount": str(amount)})
        return encode_body(payer, payee, amount, tid)

    def amount() -> Decimal:
        return Decimal(rng.randint(1, 5000)).scaleb(-2)

    def pair() -> tuple[int, int]:
        payer, payee = rng.sample(range(1, accounts + 1), 2)
        return payer, payee

    extras = max(transfers // 10, len(Kind) * 2)
    plan = [Kind.TRANSFER] * transfers + [
        rng.choice([k for k in Kind if k is not Kind.TRANSFER]) for _ in range(extras)
    ]
    # Every extra kind at least once, whatever the seed.
    plan[transfers : transfers + len(Kind) - 1] = [k for k in Kind if k is not Kind.TRANSFER]
    rng.shuffle(plan)
    # Duplicates and conflicts need an earlier transfer to repeat: move them after one.
    first = plan.index(Kind.TRANSFER)
    plan = [plan[first], *plan[:first], *plan[first + 1 :]]

    malformed = iter(MALFORMED_BODIES * (1 + extras // len(MALFORMED_BODIES)))
    for kind in plan:
        earlier = [m for m in sent if m.kind is Kind.TRANSFER]
        if kind is Kind.TRANSFER:
            tid = new_id()
            message = Message(transfer(*pair(), amount(), tid), kind, tid)
        elif kind is Kind.DUPLICATE:
            original = rng.choice(earlier)
            message = Message(original.body, kind, original.transfer_id)
        elif kind is Kind.CONFLICT:
            original = rng.choice(earlier)
            changed = json.loads(original.body)
            changed["amount"] = str(Decimal(changed["amount"]) + Decimal("0.01"))
            message = Message(json.dumps(changed), kind, original.transfer_id)
        elif kind is Kind.NO_ID:
            message = Message(transfer(*pair(), amount(), None), kind, None)
        elif kind is Kind.UNKNOWN_ACCOUNT:
            tid = new_id()
            message = Message(transfer(1, 10_000 + rng.randint(0, 99), amount(), tid), kind, tid)
        elif kind is Kind.INVALID_AMOUNT:
            tid = new_id()
            bad = rng.choice([Decimal("-5"), Decimal("0.0000001"), Decimal(0)])
            message = Message(transfer(*pair(), bad, tid), kind, tid)
        else:
            message = Message(next(malformed), kind, None)
        sent.append(message)
    workload.messages = sent
    return workload
