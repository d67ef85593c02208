"""ExchangeService (agents) and ExchangeAdminService (operators): unpack, call, pack."""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future

import grpc

from silolink import errors
from silolink.exchange_protos import (
    AGREEMENT_STATE_NAMES,
    AGREEMENT_STATES,
    header_from_proto,
    header_to_proto,
    key_from_proto,
    key_to_proto,
)
from silolink.gen.exchange.v1 import exchange_pb2, exchange_pb2_grpc
from silolink.identity import Role
from silolink.paging import next_page_token, page_limit, page_start
from silolink.protos import timestamp
from silolink.rpc.guard import current_identity
from silolink.rpc.server import ServiceMount

from .broker import Broker, Receipt, Sender, Upload
from .registry import AgreementRegistry, SiteKeys
from .store import AgreementRecord, EnvelopeRecord

log = logging.getLogger(__name__)
# Bytes of small envelopes (held in memory until committed) waiting on one stream before
# the reader stops taking new ones; bounds memory. Large envelopes wait on disk.
MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024


def caller_certificate(context: grpc.ServicerContext) -> bytes:
    pems = context.auth_context().get("x509_pem_cert")
    if not pems:
        raise errors.Unauthenticated("this call needs the site's client certificate")
    return pems[0]


def agreement_to_proto(record: AgreementRecord) -> exchange_pb2.Agreement:
    return exchange_pb2.Agreement(
        id=record.id,
        sender=record.sender,
        recipient=record.recipient,
        purpose=record.purpose,
        state=AGREEMENT_STATES[record.state],
        created_at=timestamp(record.created_at),
        accepted_at=timestamp(record.accepted_at),
        created_by=record.created_by,
        study=record.study,
    )


def inbox_entry(record: EnvelopeRecord) -> exchange_pb2.InboxEntry:
    return exchange_pb2.InboxEntry(
        header=header_to_proto(record.header),
        received_at=timestamp(record.received_at),
        expires_at=timestamp(record.expires_at),
    )


def _add_receipts(response: exchange_pb2.SendEnvelopesResponse, receipts: list[Receipt]) -> None:
    # Filled in place: building each receipt and its timestamp as messages of their own
    # and copying them in cost half as much again per envelope.
    add = response.receipts.add
    for receipt in receipts:
        seconds = int(receipt.expires_at)
        entry = add(envelope_id=receipt.envelope_id, duplicate=receipt.duplicate)
        entry.expires_at.seconds = seconds
        entry.expires_at.nanos = int((receipt.expires_at - seconds) * 1e9)


class _Outcomes:
    """What the reader produced, in stream order: futures of groups of receipts, a refusal,
    or None for the end. Bounded by the bytes waiting in memory, so a fast sender cannot
    queue unlimited envelopes ahead of the disk."""

    def __init__(self) -> None:
        self._items: collections.deque = collections.deque()
        self._weights: collections.deque = collections.deque()
        self._waiting = 0
        self._cond = threading.Condition()
        self._closed = False

    def close(self) -> None:
        """The call ended: let a blocked reader go."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def put(self, item: Future | errors.SiloError | None, weight: int = 0) -> None:
        with self._cond:
            # An item heavier than the bound still goes through once the queue is empty.
            while self._waiting and self._waiting + weight > MAX_IN_FLIGHT_BYTES and not self._closed:
                self._cond.wait()
            self._items.append(item)
            self._weights.append(weight)
            self._waiting += weight
            self._cond.notify_all()

    def take(self) -> list:
        """The next outcome (waiting for its commit), plus every one after it already done."""
        with self._cond:
            while not self._items:
                self._cond.wait()
            first = self._items[0]
        if isinstance(first, Future):
            first.exception()  # wait for its commit, outside the lock
        with self._cond:
            batch = [self._pop()]
            while self._items and isinstance(self._items[0], Future) and self._items[0].done():
                batch.append(self._pop())
            if self._items and batch[-1] is not None and not isinstance(self._items[0], Future):
                batch.append(self._pop())
            self._cond.notify_all()
        return batch

    def _pop(self):
        self._waiting -= self._weights.popleft()
        return self._items.popleft()


class ExchangeServicer(exchange_pb2_grpc.ExchangeServiceServicer):
    def __init__(self, broker: Broker, agreements: AgreementRegistry, keys: SiteKeys) -> None:
        self._broker = broker
        self._agreements = agreements
        self._keys = keys

    def PublishSiteKey(self, request, context):
        if not request.HasField("key"):
            raise errors.InvalidArgument("the key to publish is missing")
        changed = self._keys.publish(current_identity().name, caller_certificate(context), key_from_proto(request.key))
        return exchange_pb2.PublishSiteKeyResponse(unchanged=not changed)

    def GetSiteKey(self, request, context):
        record = self._keys.current(request.site)
        return exchange_pb2.GetSiteKeyResponse(
            key=key_to_proto(SiteKeys.to_published(record)), certificate_pem=record.certificate_pem
        )

    def SendEnvelopes(self, request_iterator, context) -> Iterator[exchange_pb2.SendEnvelopesResponse]:
        sender = Sender.of(current_identity().name, caller_certificate(context).decode())
        # The reader takes envelopes off the stream while earlier ones wait for their group
        # commit; receipts go back in commit order. The first refusal ends the stream.
        outcomes = _Outcomes()
        context.add_callback(outcomes.close)
        reader = threading.Thread(
            target=self._read_uploads,
            args=(sender, request_iterator, outcomes),
            name=f"send-{sender.name}",
            daemon=True,
        )
        reader.start()
        while True:
            response = exchange_pb2.SendEnvelopesResponse()
            for item in outcomes.take():
                if item is None:
                    if response.receipts:
                        yield response
                    return
                results = [item] if isinstance(item, errors.SiloError) else item.result()
                refused = next((i for i, r in enumerate(results) if isinstance(r, errors.SiloError)), None)
                _add_receipts(response, results if refused is None else results[:refused])
                if refused is not None:
                    if response.receipts:
                        yield response
                    raise results[refused]
            yield response

    def _read_uploads(self, sender: Sender, requests, outcomes: _Outcomes) -> None:
        upload: Upload | None = None
        try:
            for request in requests:
                if request.envelopes:
                    if upload is not None or request.HasField("header") or request.chunks or request.signature:
                        raise errors.InvalidArgument(
                            "whole envelopes travel alone in a request, between envelopes sent in parts"
                        )
                    whole = [
                        (header_from_proto(e.header), e.sealed_key, e.ciphertext, e.signature)
                        for e in request.envelopes
                    ]
                    future, failure = self._broker.send_whole(sender, whole)
                    if future is not None:
                        # From the tuples: each read of a message's bytes field copies it.
                        outcomes.put(future, sum(len(key) + len(data) for _, key, data, _ in whole))
                    if failure is not None:
                        raise failure
                    continue
                if request.HasField("header"):
                    if upload is not None:
                        raise errors.InvalidArgument(
                            f"a new envelope started before envelope {upload.envelope_id} was closed with its signature"
                        )
                    upload = self._broker.begin(sender, header_from_proto(request.header), request.sealed_key)
                elif upload is None:
                    raise errors.InvalidArgument("an upload must start with an envelope header")
                for piece in request.chunks:
                    upload.add(piece)
                if request.signature:
                    future = upload.finish(request.signature)
                    outcomes.put(future, upload.memory_bytes)
                    upload = None
            if upload is not None:
                raise errors.InvalidArgument(f"the stream ended before envelope {upload.envelope_id} was complete")
            outcomes.put(None)
        except errors.SiloError as e:
            outcomes.put(e)
        except grpc.RpcError:
            outcomes.put(errors.Cancelled("the sender closed the stream"))
        except Exception:  # noqa: BLE001 - reported as INTERNAL by the guard
            log.exception("reading envelopes from %s failed", sender.name)
            outcomes.put(errors.Internal("the coordinator failed reading the upload; see its log"))
        finally:
            if upload is not None:
                upload.abort()

    def ListInbox(self, request, context):
        entries = [inbox_entry(r) for r in self._broker.inbox(current_identity().name)]
        return exchange_pb2.ListInboxResponse(entries=entries)

    def FetchEnvelope(self, request, context):
        record, cert, pieces = self._broker.fetch(current_identity().name, request.envelope_id)
        yield exchange_pb2.FetchEnvelopeResponse(
            envelope=exchange_pb2.StoredEnvelope(
                header=header_to_proto(record.header),
                sealed_key=record.sealed_key,
                signature=record.signature,
                sender_certificate_pem=cert,
            )
        )
        for piece in pieces:
            yield exchange_pb2.FetchEnvelopeResponse(chunks=[piece])

    def AckEnvelope(self, request, context):
        self._broker.ack(current_identity().name, request.envelope_id)
        return exchange_pb2.AckEnvelopeResponse()

    def ListSiteAgreements(self, request, context):
        records = self._agreements.list(current_identity().name)
        return exchange_pb2.ListSiteAgreementsResponse(agreements=[agreement_to_proto(r) for r in records])

    def AcceptAgreement(self, request, context):
        record = self._agreements.accept(current_identity().name, request.id)
        return exchange_pb2.AcceptAgreementResponse(agreement=agreement_to_proto(record))


class ExchangeAdminServicer(exchange_pb2_grpc.ExchangeAdminServiceServicer):
    def __init__(self, agreements: AgreementRegistry, queues=None) -> None:
        self._agreements = agreements
        self._queues = queues or dict  # () -> {site: [in, in bytes, out, out bytes]}

    def ListQueues(self, request, context):
        queues = sorted(self._queues().items())
        if request.site:
            queues = [(site, q) for site, q in queues if site == request.site]
            envelopes, size = (
                (queues[0][1][0] + queues[0][1][2], queues[0][1][1] + queues[0][1][3]) if queues else (0, 0)
            )
        else:  # each waiting envelope is in exactly one site's inbound queue
            envelopes, size = sum(q[0] for _, q in queues), sum(q[1] for _, q in queues)
        total_sites = len(queues)
        if request.page_size:  # the fullest queues first
            queues.sort(key=lambda item: -(item[1][1] + item[1][3]))
            queues = queues[: page_limit(request.page_size)]
        return exchange_pb2.ListQueuesResponse(
            queues=[
                exchange_pb2.SiteQueue(
                    site=site, inbound_envelopes=q[0], inbound_bytes=q[1], outbound_envelopes=q[2], outbound_bytes=q[3]
                )
                for site, q in queues
            ],
            total_sites=total_sites,
            total_envelopes=envelopes,
            total_bytes=size,
        )

    def CreateAgreement(self, request, context):
        record = self._agreements.create(
            request.sender, request.recipient, request.purpose, actor=current_identity(), study=request.study
        )
        return exchange_pb2.CreateAgreementResponse(agreement=agreement_to_proto(record))

    def ListAgreements(self, request, context):
        start = page_start(request.page_token)
        state = AGREEMENT_STATE_NAMES.get(request.state, "") if request.state else ""
        if request.state and not state:
            raise errors.InvalidArgument(f"agreement state {request.state} is not a known state")
        found, total = self._agreements.page(request.site, state, page_limit(request.page_size), start)
        return exchange_pb2.ListAgreementsResponse(
            agreements=[agreement_to_proto(r) for r in found],
            next_page_token=next_page_token(start, len(found), total, request.page_size),
            total_size=total,
        )

    def RevokeAgreement(self, request, context):
        record = self._agreements.revoke(request.id, actor=str(current_identity()))
        return exchange_pb2.RevokeAgreementResponse(agreement=agreement_to_proto(record))


def mounts(servicer: ExchangeServicer, admin: ExchangeAdminServicer) -> list[ServiceMount]:
    agent = {Role.AGENT}
    return [
        ServiceMount(
            name=exchange_pb2.DESCRIPTOR.services_by_name["ExchangeService"].full_name,
            register=lambda s: exchange_pb2_grpc.add_ExchangeServiceServicer_to_server(servicer, s),
            rules={
                "PublishSiteKey": agent,
                "GetSiteKey": agent,
                "SendEnvelopes": agent,
                "ListInbox": agent,
                "FetchEnvelope": agent,
                "AckEnvelope": agent,
                "ListSiteAgreements": agent,
                "AcceptAgreement": agent,
            },
        ),
        ServiceMount(
            name=exchange_pb2.DESCRIPTOR.services_by_name["ExchangeAdminService"].full_name,
            register=lambda s: exchange_pb2_grpc.add_ExchangeAdminServiceServicer_to_server(admin, s),
            rules={
                "CreateAgreement": {Role.OPERATOR},
                "ListAgreements": {Role.VIEWER},
                "RevokeAgreement": {Role.OPERATOR},
                "ListQueues": {Role.VIEWER},
            },
        ),
    ]
