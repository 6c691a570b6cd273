"""Which carrier module sends for a business number: the one seam between the
carrier-neutral core and `gateway/carriers/`.

Workers, routing and the models never import `gateway.carriers`; they ask this module for
a `Sender` and speak only `OutboundMessage`, `SendResult` and `SendError`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gateway.carriers.errors import SendError
from gateway.messaging import OutboundMessage, SendResult
from gateway.settings import CarrierSettings, Settings

__all__ = ["SendError", "Sender", "carrier_for"]


@dataclass(frozen=True)
class Sender:
    """One configured carrier account, able to send and to look up what it sent."""

    carrier: CarrierSettings

    @property
    def module(self):
        from gateway.carriers import twilio

        modules = {twilio.KIND: twilio}
        return modules[self.carrier.kind]

    def warm(self) -> None:
        """Get ready to send at once (clients built, modules imported)."""
        self.module.warm(self.carrier)

    def send(self, message: OutboundMessage) -> SendResult:
        return self.module.send(message, self.carrier)

    def lookup(self, carrier_message_id: str) -> SendResult | None:
        return self.module.lookup(carrier_message_id, self.carrier)

    def find_sent(self, message: OutboundMessage, since: dt.datetime, taken=frozenset()) -> SendResult | None:
        """The carrier's record of `message` sent since `since`, if any, other than `taken` SIDs."""
        return self.module.find_sent(message, since, self.carrier, taken)


def carrier_for(settings: Settings, business_number: str) -> Sender:
    """The sender for a configured business number (KeyError when it is not ours)."""
    number = settings.business_number(business_number)
    if number is None:
        raise KeyError(f"{business_number} is not a configured business number")
    return Sender(settings.carrier_named(number.carrier))
