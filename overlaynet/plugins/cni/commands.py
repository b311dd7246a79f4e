"""CNI commands mapped onto overlayd's API. overlayd makes the veth, moves it into CNI_NETNS as
CNI_IFNAME with the address, MAC and MTU, and plugs the other end into the network's bridge; the
plugin itself never touches the kernel.
"""

from __future__ import annotations

import os
from typing import Any

from overlaynet.api.client import ApiError, Client, DaemonUnreachable
from overlaynet.plugins.cni import spec
from overlaynet.plugins.cni.spec import CniError, Invocation, NetConf


def _daemon_error(e: ApiError, doing: str) -> CniError:
    if isinstance(e, DaemonUnreachable):
        return CniError(spec.ERR_TRY_AGAIN_LATER, f"{doing}: {e.message}")
    return CniError(spec.ERR_DAEMON, f"{doing}: {e.message}")


def _ensure_network(api: Client, conf: NetConf) -> None:
    """With "subnet" in the config, the first ADD creates the network (or finds it, made by any host)."""
    if not conf.subnet:
        return
    try:
        api.get_network(conf.network)
        return
    except ApiError as e:
        if e.status != 404:
            raise _daemon_error(e, f"looking up network {conf.network}") from None
    try:
        # with the anycast gateway (the network's DNS address) at the first address, as the CLI does
        api.create_network(conf.network, conf.subnet, gateway="auto", egress=conf.body.egress)
    except ApiError as e:
        if e.status != 409:  # 409: created meanwhile by a concurrent ADD or another host
            raise _daemon_error(e, f"creating network {conf.network}") from None


def add(api: Client, conf: NetConf, inv: Invocation) -> dict[str, Any]:
    if not os.path.exists(inv.netns):
        raise CniError(spec.ERR_INVALID_ENV, f"CNI_NETNS {inv.netns} does not exist")
    _ensure_network(api, conf)
    endpoint_id = spec.endpoint_id(conf.network, inv.container_id, inv.ifname)
    try:
        endpoint = api.create_endpoint(
            conf.network, netns=inv.netns, ifname=inv.ifname, ip=spec.requested_ip(conf, inv),
            mac=spec.requested_mac(conf, inv), id=endpoint_id, labels=spec.labels(conf, inv),
            names=spec.dns_names(conf, inv),
        )
    except ApiError as e:
        raise _daemon_error(e, f"attaching {inv.ifname} to network {conf.network}") from None
    return spec.build_result(conf, inv, endpoint)


def delete(api: Client, conf: NetConf, inv: Invocation) -> None:
    """Idempotent: an endpoint that is already gone (or a netns that vanished) is success."""
    endpoint_id = spec.endpoint_id(conf.network, inv.container_id, inv.ifname)
    try:
        api.delete_endpoint(endpoint_id)
    except ApiError as e:
        if e.status != 404:
            raise _daemon_error(e, f"detaching {inv.ifname} from network {conf.network}") from None


def check(api: Client, conf: NetConf, inv: Invocation) -> None:
    endpoint_id = spec.endpoint_id(conf.network, inv.container_id, inv.ifname)
    try:
        endpoint = api.get_endpoint(endpoint_id, check=True)
    except ApiError as e:
        if e.status == 404:
            raise CniError(spec.ERR_CHECK_FAILED,
                           f"{inv.ifname} of container {inv.container_id[:12]} is not attached to "
                           f"network {conf.network}") from None
        raise _daemon_error(e, "checking the attachment") from None
    if endpoint.get("network") != conf.network:
        raise CniError(spec.ERR_CHECK_FAILED, f"endpoint is on network {endpoint.get('network')}, "
                       f"expected {conf.network}")
    expected = spec.prev_result_ips(conf)
    if expected and endpoint["ip"] not in expected:
        raise CniError(spec.ERR_CHECK_FAILED, f"{inv.ifname} has {endpoint['ip']}, but the previous result "
                       f"said {', '.join(expected)}")
    if not os.path.exists(inv.netns):
        raise CniError(spec.ERR_CHECK_FAILED, f"CNI_NETNS {inv.netns} is gone")
    if endpoint.get("netns") and os.path.realpath(endpoint["netns"]) != os.path.realpath(inv.netns):
        raise CniError(spec.ERR_CHECK_FAILED, f"endpoint is in {endpoint['netns']}, not {inv.netns}")
    if endpoint.get("present") is False:
        raise CniError(spec.ERR_CHECK_FAILED, f"the veth of {inv.ifname} is missing (removed behind overlayd's "
                                              "back); overlayd repairs it at its next reconciliation")


def status(api: Client, conf: NetConf) -> None:
    try:
        api.status()
        if not conf.subnet:
            api.get_network(conf.network)
    except DaemonUnreachable as e:
        raise CniError(spec.ERR_NOT_READY, e.message) from None
    except ApiError as e:
        if e.status == 404:
            raise CniError(spec.ERR_NOT_READY,
                           f"overlaynet network {conf.network} does not exist; create it with "
                           f"`overlayctl network create {conf.network} --subnet ...` or add \"subnet\" to "
                           "the CNI config") from None
        raise CniError(spec.ERR_NOT_READY, e.message) from None


def gc(api: Client, conf: NetConf) -> list[str]:
    """Remove this host's CNI endpoints on the network that the runtime no longer lists."""
    keep = {spec.endpoint_id(conf.network, cid, ifname) for cid, ifname in spec.valid_attachments(conf)}
    try:
        me = api.status().get("name")
        endpoints = api.list_endpoints(conf.network)
    except ApiError as e:
        raise _daemon_error(e, "listing endpoints for GC") from None
    removed = []
    for endpoint in endpoints:
        ident = endpoint["id"]
        if not spec.is_ours(endpoint) or ident in keep or endpoint.get("host") != me:
            continue
        try:
            api.delete_endpoint(ident)
            removed.append(ident)
        except ApiError as e:
            if e.status != 404:
                raise _daemon_error(e, f"removing stale endpoint {ident[:12]}") from None
    return removed
