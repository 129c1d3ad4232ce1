"""The intake's HubSpot contacts, upserted in batches when several are due at once.

``create_hubspot_contact`` hands its contact to the :class:`~antifragile.jobs.Coalescer` of
the HubSpot connector it runs with: the contact jobs a worker runs at once -- a backlog
draining after an outage -- share one ``POST .../contacts/batch/upsert`` per 100 contacts
(:meth:`~antifragile.connectors.HubSpotConnector.upsert_contacts_each`), and each job gets
its own contact or its own error. Upserting by email is idempotent, so a contact sent again
(a job retried after an ambiguous failure, or one whose lease was lost while it waited) is
the same contact.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping

from antifragile.connectors import HubSpotConnector
from antifragile.connectors._hubspot import BATCH_LIMIT, Contact
from antifragile.errors import IntegrationError
from antifragile.jobs import Coalescer

__all__ = ["upsert_contact"]

_Item = tuple[str, Mapping[str, str]]

_coalescers: weakref.WeakKeyDictionary[HubSpotConnector, Coalescer[_Item, Contact]] = (
    weakref.WeakKeyDictionary()
)


def contact_coalescer(hubspot: HubSpotConnector) -> Coalescer[_Item, Contact]:
    """The coalescer of *hubspot*'s contact upserts (one per connector)."""
    coalescer = _coalescers.get(hubspot)
    if coalescer is None:

        async def send(items: list[_Item]) -> list[Contact | IntegrationError]:
            return await hubspot.upsert_contacts_each(items)

        coalescer = Coalescer(send, max_size=BATCH_LIMIT)
        _coalescers[hubspot] = coalescer
    return coalescer


async def upsert_contact(
    hubspot: HubSpotConnector, email: str, properties: Mapping[str, str]
) -> Contact:
    """Upsert the contact *email* with *properties*, in a batch with the contacts due at once."""
    return await contact_coalescer(hubspot).submit((email, properties))
