"""Docker remote network driver + IPAM driver (`overlaynet-docker`). See docs/docker.md."""
