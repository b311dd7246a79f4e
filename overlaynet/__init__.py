"""overlaynet: a VXLAN overlay network for containers across hosts."""

__version__ = "0.1.0"
