"""moto_server for trellis-lab, with the one fix its VPC needs: EC2 never hands out an address
twice, nor one a subnet reserves (the network address, .1 to .3 and the broadcast address).
moto draws ENI addresses at random from the whole CIDR and checks only within one ENI, so in a
lab a pod could get the router's address or another node's. Everything else is moto as is.

Run as: python3 moto_lab.py -H 0.0.0.0 -p 5000   (moto_server's arguments)
"""
import collections
import ipaddress
import random

from moto.ec2.models import ec2_backends
from moto.ec2.models import elastic_network_interfaces as enis
from moto.server import main

_original = enis.random_private_ip
# Addresses just handed out: one CreateNetworkInterface draws all its addresses before any
# of them is on an ENI.
_recent = collections.deque(maxlen=256)


def _in_use():
    used = set(_recent)
    for account in list(ec2_backends.values()):
        for backend in list(account.values()):
            for eni in list(getattr(backend, "enis", {}).values()):
                if eni.private_ip_address:
                    used.add(eni.private_ip_address)
                for item in eni.private_ip_addresses:
                    ip = item.get("PrivateIpAddress") if isinstance(item, dict) else item
                    if ip:
                        used.add(ip)
    return used


def unique_private_ip(cidr=None, ipv6=False):
    if not cidr or ipv6:
        return _original(cidr, ipv6)
    net = ipaddress.IPv4Network(cidr)
    first = int(net.network_address) + 4
    last = int(net.broadcast_address) - 1
    taken = _in_use()
    for _ in range(100000):
        ip = str(ipaddress.IPv4Address(random.randint(first, last)))
        if ip not in taken:
            _recent.append(ip)
            return ip
    raise RuntimeError(f"no free address left in {cidr}")


enis.random_private_ip = unique_private_ip

if __name__ == "__main__":
    main()
