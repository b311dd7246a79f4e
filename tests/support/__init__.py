"""Helpers shared by the test tiers: labs, engines (dockerd/podman), kernel probes, the fast-path lab,
running as nobody, an event loop in a thread, and the cluster tier's common settings."""
