"""overlayd's REST API: the aiohttp server on the unix socket and the client all front ends use."""
