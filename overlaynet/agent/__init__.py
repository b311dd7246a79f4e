"""overlayd: configuration, state, the reconciler and the daemon's lifecycle."""
