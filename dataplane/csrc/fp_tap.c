/* TAP devices: created (or re-attached) inside a network's sandbox namespace with a virtio_net_hdr
 * and the offloads the kernel accepts; the frame reads and writes of the forwarding paths. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fp_engine.h"

int fp_setns_path(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fp_seterr(err, errlen, path);
        return -1;
    }
    int r = setns(fd, CLONE_NEWNET);
    if (r)
        fp_seterr(err, errlen, "setns");
    close(fd);
    return r;
}

static int tap_configure(int fd, const char *name, int mtu, struct fp_tap_info *out, char *err, size_t errlen)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        fp_seterr(err, errlen, "socket");
        return -1;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    int rc = -1;
    if (mtu > 0) {
        ifr.ifr_mtu = mtu;
        if (ioctl(s, SIOCSIFMTU, &ifr)) {
            fp_seterr(err, errlen, "set MTU");
            goto out;
        }
    }
    if (ioctl(s, SIOCGIFFLAGS, &ifr)) {
        fp_seterr(err, errlen, "get flags");
        goto out;
    }
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr)) {
        fp_seterr(err, errlen, "set up");
        goto out;
    }
    if (ioctl(s, SIOCGIFMTU, &ifr)) {
        fp_seterr(err, errlen, "get MTU");
        goto out;
    }
    out->mtu = ifr.ifr_mtu;
    if (ioctl(s, SIOCGIFINDEX, &ifr)) {
        fp_seterr(err, errlen, "ifindex");
        goto out;
    }
    out->ifindex = ifr.ifr_ifindex;
    rc = 0;
out:
    close(s);
    (void)fd;
    return rc;
}

int fp_tap_open(const char *netns_path, const char *name, int mtu, int persist, struct fp_tap_info *out, char *err,
                size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->fd = -1;
    if (strlen(name) == 0 || strlen(name) >= IFNAMSIZ) {
        snprintf(err, errlen, "TAP name %s must be 1..15 characters", name);
        return -1;
    }
    int self = -1, fd = -1, rc = -1;
    if (netns_path && *netns_path) {
        self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (self < 0) {
            fp_seterr(err, errlen, "open own netns");
            return -1;
        }
        if (fp_setns_path(netns_path, err, errlen)) {
            close(self);
            return -1;
        }
    }
    fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        fp_seterr(err, errlen, "/dev/net/tun");
        goto out;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (ioctl(fd, TUNSETIFF, &ifr) == 0) {
        out->vnet_hdr = 1;
    } else {
        /* fallback: no virtio_net_hdr, hence no offloads */
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
        if (ioctl(fd, TUNSETIFF, &ifr)) {
            fp_seterr(err, errlen, "TUNSETIFF");
            goto out;
        }
    }
    if (out->vnet_hdr) {
        int sz = FP_VNET_HLEN;
        if (ioctl(fd, TUNSETVNETHDRSZ, &sz)) {
            fp_seterr(err, errlen, "TUNSETVNETHDRSZ");
            goto out;
        }
        /* Probe from most to least capable: CSUM, TSO and (kernel >= 6.2) USO, so that TCP and UDP
         * GSO frames (an application's UDP_SEGMENT sends, or UDP GRO on a container's veth) reach
         * us whole and are split here, right before encapsulation. */
        static const unsigned tries[] = {
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6,
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
            TUN_F_CSUM | TUN_F_TSO4,
            TUN_F_CSUM,
            0,
        };
        for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
            if (ioctl(fd, TUNSETOFFLOAD, tries[i]) == 0) {
                out->offload = tries[i];
                break;
            }
        }
    }
    if (persist && ioctl(fd, TUNSETPERSIST, 1)) {
        fp_seterr(err, errlen, "TUNSETPERSIST");
        goto out;
    }
    if (tap_configure(fd, ifr.ifr_name, mtu, out, err, errlen))
        goto out;
    out->fd = fd;
    fd = -1;
    rc = 0;
out:
    if (fd >= 0) {
        if (persist)
            ioctl(fd, TUNSETPERSIST, 0);
        close(fd);
    }
    if (self >= 0) {
        if (setns(self, CLONE_NEWNET)) {
            /* cannot happen short of a kernel bug; never keep running in the wrong namespace */
            perror("fastpath: setns back to own namespace");
            abort();
        }
        close(self);
    }
    return rc;
}

int fp_tap_delete(int fd)
{
    ioctl(fd, TUNSETPERSIST, 0);
    return close(fd);
}

ssize_t fp_tap_read(const struct fp_net *net, void *buf, size_t size)
{
    return read(net->fd, buf, size);
}

int fp_tap_writev(const struct fp_net *net, const struct iovec *iov, int niov)
{
    return writev(net->fd, iov, niov) < 0 ? -1 : 0;
}
