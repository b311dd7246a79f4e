# overlayd in a container. Build a wheelhouse first (no compiler or index needed in the image):
#   pip wheel -w wheelhouse . pip
#   docker build -t overlaynet .
# Run it as the host's daemon (docs/operations.md, "In a container"):
#   mount --bind /var/lib/overlaynet /var/lib/overlaynet && mount --make-shared /var/lib/overlaynet
#   docker run -d --name overlayd --restart unless-stopped --net=host --pid=host --privileged \
#     -v /var/lib/overlaynet:/var/lib/overlaynet:rshared -v /run/overlaynet:/run/overlaynet \
#     -v /run/netns:/run/netns:rslave -v /etc/overlaynet:/etc/overlaynet:ro overlaynet
# --net=host: its devices, gossip and VXLAN sockets are the host's. --pid=host: container namespaces
# given as /proc/PID/ns/net are found, and /run/netns (rslave) shows namespaces made later. --privileged: netns, bridges, TAP, nftables. rshared: the
# per-network sandbox namespaces are bind mounts under the state dir; they must reach the host and
# outlive the container.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
# libnftables (the kernel dataplane's filters) from Debian, unless the base already has it.
RUN [ -e /usr/lib/x86_64-linux-gnu/libnftables.so.1 ] || { apt-get update \
    && apt-get install -y --no-install-recommends libnftables1 && rm -rf /var/lib/apt/lists/*; }
COPY wheelhouse/ /tmp/wheelhouse/
# pip runs from its own wheel, so the base needs no pip of its own.
RUN set -- /tmp/wheelhouse/pip-*.whl && python3 "$1/pip" install --no-index --no-cache-dir \
        --find-links /tmp/wheelhouse overlaynet \
    && rm -rf /tmp/wheelhouse && overlayd --version
VOLUME ["/var/lib/overlaynet"]
ENTRYPOINT ["overlayd"]
CMD ["--config", "/etc/overlaynet/overlayd.toml"]
