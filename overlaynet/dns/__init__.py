"""overlayd's DNS for the names of the overlay's endpoints (docs/dns.md).

- `answer.py`: what to answer for one network; pure, bytes in, bytes out (sans-IO, like gossip's
  core): the unit and fuzz tests drive it without sockets.
- `server.py`: the UDP and TCP servers on each network's gateway address inside its sandbox, rate
  limits and counters; it asks `answer.py` for every reply.

The agent (`agent/programmer.py`) owns one `DnsService` and tells it which networks to serve.
"""
