"""Gossip control plane: SWIM membership + replicated tables (sans-IO core, asyncio transport)."""

from .config import GossipConfig
from .core import GossipCore
from .keyring import AuthError, Keyring, KeyringError, generate_key
from .state import KeyringChange, MemberChange, MemberInfo, MemberState, TableChange

__all__ = [
    "AuthError", "GossipConfig", "GossipCore", "Keyring", "KeyringChange", "KeyringError", "MemberChange",
    "MemberInfo", "MemberState", "TableChange", "generate_key",
]
