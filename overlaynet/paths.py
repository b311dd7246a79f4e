"""Where overlayd keeps its files by default: one small module, so that one-shot clients (overlayctl,
the CNI plugin) can name the socket without importing the daemon's configuration code."""

DEFAULT_CONFIG = "/etc/overlaynet/overlayd.toml"
DEFAULT_SOCKET = "/run/overlaynet/overlayd.sock"
DEFAULT_STATE_DIR = "/var/lib/overlaynet"
