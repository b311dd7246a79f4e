"""Front ends that let container engines use overlaynet: the Docker remote driver and the CNI plugin.

Both are thin: they translate the engine's protocol into calls on overlayd's REST API and never touch
the kernel or the daemon's state themselves.
"""
