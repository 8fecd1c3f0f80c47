"""DICOM C-STORE receiver: the C-arm pushes its shots to the workstation over the network.

A pynetdicom Storage SCP serving in its own threads. What keeps junk and slow peers from
locking the C-arm out:
- only the configured calling AE titles are associated (others rejected at A-ASSOCIATE);
- short ACSE, DIMSE and network timeouts: a peer that stalls is dropped in seconds;
- ``max_associations`` established associations at once, and at most ``max_pending``
  TCP connections that have not associated yet; when that pool is full the *oldest*
  pending connection is closed to let the new one in, so a flood of connections that
  send nothing or garbage cannot keep a real C-arm out until they time out.

Each received object is classified (``core.imaging.modality``): a projection X-ray is
written into ``incoming`` atomically (temp file, then rename) under a name made from a
counter and a random id, never from DICOM fields, and handed to ``on_shot(path)``;
anything else is answered "SOP class not supported" and handed to ``on_refused(line)``.
"""
from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from core.imaging.modality import classify
from devices.base import DeviceError, DeviceStatus

__all__ = ["DicomReceiver", "ReceiverConfig"]

log = logging.getLogger(__name__)

_SUCCESS, _NOT_SUPPORTED, _CANNOT_UNDERSTAND, _OUT_OF_RESOURCES = 0x0000, 0x0122, 0xC000, 0xA700


class ReceiverConfig:
    """The receiver's settings (the ``[dicom]`` section of the configuration)."""

    def __init__(self, *, ae_title: str = "FLUORONAV", bind_address: str = "127.0.0.1", port: int = 11112,
                 allowed_calling_ae_titles=(), acse_timeout_s: float = 5.0, dimse_timeout_s: float = 5.0,
                 network_timeout_s: float = 5.0, max_associations: int = 4, max_pending: int = 16,
                 max_pdu_bytes: int = 65536, incoming: str | os.PathLike = ""):
        titles = [str(t).strip() for t in allowed_calling_ae_titles if str(t).strip()]
        if not titles:
            raise DeviceError("dicom.allowed_calling_ae_titles is empty: list the C-arm's AE title "
                              "(its DICOM network settings show it)")
        for t in titles + [ae_title]:
            if len(t) > 16 or not t.isascii() or "\\" in t:
                raise DeviceError(f"AE title {t!r} is not valid: at most 16 ASCII characters, no backslash")
        if not str(incoming).strip():
            raise DeviceError("no folder for incoming DICOM files: set dicom.incoming_folder")
        self.ae_title, self.bind_address, self.port = ae_title.strip(), bind_address, int(port)
        self.allowed = titles
        self.acse_timeout_s, self.dimse_timeout_s = float(acse_timeout_s), float(dimse_timeout_s)
        self.network_timeout_s = float(network_timeout_s)
        self.max_associations, self.max_pending = max(1, int(max_associations)), max(1, int(max_pending))
        self.max_pdu_bytes, self.incoming = int(max_pdu_bytes), Path(incoming)


class DicomReceiver:
    """Storage SCP. ``connect()`` starts listening, ``disconnect()`` stops; ``status()`` and
    ``last_message`` for the status bar pill; ``port`` is the bound port (0 in the config:
    a free one). Callbacks run on the receiver's threads: keep them short (a queue put)."""

    name = "DICOM"

    def __init__(self, config: ReceiverConfig, on_shot: Callable[[Path], None] | None = None,
                 on_refused: Callable[[str], None] | None = None):
        self.config = config
        self.on_shot, self.on_refused = on_shot, on_refused
        self.last_message = "not started"
        self.received = 0
        self.refused = 0
        self._status = DeviceStatus.DISCONNECTED
        self._server = None
        self._ae = None
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[socket.socket, float] = {}     # connections not associated yet -> since
        self.evicted = 0
        # threads of closed connections wait out the ACSE timeout: bound them all the same
        self._thread_cap = 8 * (config.max_associations + config.max_pending)

    # -- life -----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server is not None else 0

    def status(self) -> DeviceStatus:
        return self._status

    def connect(self) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.presentation import AllStoragePresentationContexts
        c = self.config
        try:
            c.incoming.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._fault(f"cannot create the incoming folder {c.incoming} ({e.strerror})")
            raise DeviceError(self.last_message) from None
        ae = AE(ae_title=c.ae_title)
        ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = c.acse_timeout_s, c.dimse_timeout_s, c.network_timeout_s
        ae.maximum_pdu_size = c.max_pdu_bytes
        ae.require_calling_aet = list(c.allowed)
        # pynetdicom's own limit counts every connection's thread, also those that never
        # associated and linger until the ACSE timeout after being closed: a flood would make
        # it refuse the C-arm. So it is set out of the way; the pending pool (``_admit``) and
        # the established cap (``_associated``) are the limits, ``_thread_cap`` the backstop.
        ae.maximum_associations = 10_000
        ae.supported_contexts = AllStoragePresentationContexts   # refused by content, with a line
        handlers = [(evt.EVT_C_STORE, self._store), (evt.EVT_ACCEPTED, self._associated),
                    (evt.EVT_REJECTED, self._left), (evt.EVT_ABORTED, self._left),
                    (evt.EVT_CONN_CLOSE, self._left)]
        try:
            server = ae.start_server((c.bind_address, c.port), block=False, evt_handlers=handlers)
        except OSError as e:
            self._fault(f"cannot listen on {c.bind_address}:{c.port} ({e.strerror or e}); "
                        "another program may use the port: change dicom.port")
            raise DeviceError(self.last_message) from None
        server.verify_request = self._admit          # socketserver asks it for every connection
        self._ae, self._server = ae, server
        self._status = DeviceStatus.CONNECTED
        self.last_message = f"listening as {c.ae_title} on {c.bind_address}:{self.port}"
        log.info("DICOM receiver %s", self.last_message)

    def disconnect(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._ae is not None:
            self._ae.shutdown()
            self._ae = None
        self._status = DeviceStatus.DISCONNECTED
        self.last_message = "stopped"

    close = disconnect

    def _fault(self, message: str) -> None:
        self._status, self.last_message = DeviceStatus.FAULT, message
        log.error("DICOM receiver: %s", message)

    # -- connections ----------------------------------------------------------------------
    def _admit(self, request, client_address) -> bool:
        """Every new TCP connection gets in; when too many have not associated yet, the
        oldest of them is closed (a slow or junk peer), not the newcomer."""
        if self._ae is not None and len(self._ae.active_associations) >= self._thread_cap:
            log.warning("DICOM receiver: %d connections alive: refusing %s", self._thread_cap, client_address)
            return False
        with self._lock:
            now = time.monotonic()
            while len(self._pending) >= self.config.max_pending:
                oldest = min(self._pending, key=self._pending.get)
                del self._pending[oldest]
                self.evicted += 1
                try:
                    oldest.shutdown(socket.SHUT_RDWR)   # its association thread sees the close
                except OSError:
                    pass
            self._pending[request] = now
        return True

    def _forget(self, assoc) -> None:
        sock = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
        if sock is not None:
            with self._lock:
                self._pending.pop(sock, None)

    def _associated(self, event) -> None:
        self._forget(event.assoc)
        others = [a for a in self._ae.active_associations
                  if a is not event.assoc and a.is_acceptor and a.is_established]
        if len(others) >= self.config.max_associations:
            log.warning("DICOM receiver: %d associations at once (limit %d): aborting the one from %s",
                        len(others) + 1, self.config.max_associations, event.assoc.requestor.ae_title)
            event.assoc.abort()

    def _left(self, event) -> None:
        self._forget(event.assoc)

    # -- storage ---------------------------------------------------------------------------
    def _store(self, event) -> int:
        """File one received object (runs on the association's thread)."""
        try:
            ds = event.dataset
            verdict = classify(ds)
        except Exception as e:  # an undecodable dataset from the peer
            self._say_refused(f"a DICOM object from {event.assoc.requestor.ae_title} could not be decoded "
                              f"({type(e).__name__}); ask the C-arm to send it again")
            return _CANNOT_UNDERSTAND
        if not verdict.is_shot:
            self._say_refused(f"received from {event.assoc.requestor.ae_title} is {verdict.what}, "
                              "not an X-ray projection shot")
            return _NOT_SUPPORTED
        name = f"{next(self._counter):06d}-{uuid.uuid4().hex[:12]}.dcm"   # never from DICOM fields
        path = self.config.incoming / name
        tmp = self.config.incoming / f".{name}.part"
        try:
            with open(tmp, "wb") as f:
                f.write(event.encoded_dataset())
            os.replace(tmp, path)
        except OSError as e:
            self._fault(f"cannot write into {self.config.incoming} ({e.strerror}); free disk space")
            try:
                tmp.unlink()
            except OSError:
                pass
            return _OUT_OF_RESOURCES
        self.received += 1
        self.last_message = (f"listening as {self.config.ae_title} on {self.config.bind_address}:{self.port}; "
                             f"{self.received} received")
        if self.on_shot is not None:
            try:
                self.on_shot(path)
            except Exception:  # the listener's bug must not fail the C-arm's store
                log.exception("DICOM receiver: the shot listener failed for %s", path)
        return _SUCCESS

    def _say_refused(self, line: str) -> None:
        self.refused += 1
        log.warning("DICOM receiver: %s", line)
        if self.on_refused is not None:
            try:
                self.on_refused(line)
            except Exception:
                log.exception("DICOM receiver: the refusal listener failed")

