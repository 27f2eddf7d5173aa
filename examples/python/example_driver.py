# -*- coding: utf-8 -*-
"""An example CloudShell driver whose command edits its reservation under the csmutex lock.

In a real Shell this class would derive from ``ResourceDriverInterface``
(cloudshell-shell-core) and talk to CloudShell through ``CloudShellAPISession``
(cloudshell-automation-api); neither is needed to read or test it. Python 2.7 and 3.

``connect_ports`` is the classic read-then-write sequence that two drivers interleave:
read the reservation's connectors, check that neither port is taken, add the connector.
Without the lock both drivers can see the ports free and both connect them.
"""

from __future__ import absolute_import

from csmutex_sidecar import LockNotObtained, SidecarMutex, run_locked_from_context


def cloudshell_api(context):
    """The Automation API session a driver gets from its context (admin token logon)."""
    from cloudshell.api.cloudshell_api import CloudShellAPISession  # cloudshell-automation-api

    reservation = getattr(context, "reservation", None) or context.remote_reservation
    return CloudShellAPISession(host=context.connectivity.server_address,
                                token_id=context.connectivity.admin_auth_token,
                                username=None, password=None, domain=reservation.domain)


def set_connector_request(source, target, direction="bi", alias=""):
    try:
        from cloudshell.api.cloudshell_api import SetConnectorRequest
    except ImportError:  # not on a CloudShell execution server: a stand-in with the same fields
        class SetConnectorRequest(object):
            def __init__(self, SourceResourceFullName, TargetResourceFullName, Direction, Alias):
                self.SourceResourceFullName = SourceResourceFullName
                self.TargetResourceFullName = TargetResourceFullName
                self.Direction = Direction
                self.Alias = Alias
    return SetConnectorRequest(source, target, direction, alias)


class ConnectPortsDriver(object):  # (ResourceDriverInterface) in a real Shell
    """Driver commands that connect two ports of the reservation.

    ``sidecar_address`` defaults to $CSMUTEX_SIDECAR or 127.0.0.1:7369; ``api_factory``
    (context -> API session) exists so the example can be tested without CloudShell.
    """

    def __init__(self, sidecar_address=None, api_factory=cloudshell_api, timeout=300, csmutex="csmutex"):
        self.sidecar_address = sidecar_address
        self.api_factory = api_factory
        self.timeout = timeout
        self.csmutex = csmutex

    def initialize(self, context):
        pass

    def cleanup(self):
        pass

    def connect_ports(self, context, source_port, target_port):
        """Connect source_port to target_port unless either is connected already.

        Through the csmutex sidecar (``csmutex serve`` on the execution server).
        """
        api = self.api_factory(context)
        try:
            # One line: the reservation, server, admin token and domain come from the
            # context. interrupt=True: if the lock is lost, this command is interrupted
            # (LockLost) instead of editing on unprotected.
            with SidecarMutex.from_context(context, timeout=self.timeout, address=self.sidecar_address,
                                           interrupt=True):
                return self._connect(api, context, source_port, target_port)
        except LockNotObtained as e:
            # CloudShell shows the exception text to the user: e is a clean sentence, and
            # e.holder / e.waited are there for anything smarter.
            raise Exception("reservation is busy, try again later: %s" % e)

    def connect_ports_without_sidecar(self, context, source_port, target_port):
        """The same through ``csmutex run`` (no sidecar: the csmutex binary is enough)."""
        api = self.api_factory(context)
        try:
            return run_locked_from_context(context, self._connect, api, context, source_port, target_port,
                                           timeout=self.timeout, csmutex=self.csmutex)
        except LockNotObtained as e:
            raise Exception("reservation is busy, try again later: %s" % e)

    @staticmethod
    def _connect(api, context, source_port, target_port):
        reservation = getattr(context, "reservation", None) or context.remote_reservation
        res_id = reservation.reservation_id
        # Re-read under the lock, bypassing CloudShell's cache: anything read before the
        # lock was taken may be stale.
        details = api.GetReservationDetails(res_id, True)
        for c in details.ReservationDescription.Connectors:
            for port in (source_port, target_port):
                if port in (c.Source, c.Target):
                    raise Exception("%s is already connected (%s -- %s)" % (port, c.Source, c.Target))
        api.SetConnectorsInReservation(res_id, [set_connector_request(source_port, target_port)])
        return "connected %s to %s" % (source_port, target_port)
