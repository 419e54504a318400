// SPDX-License-Identifier: Apache-2.0
//
// XDP program of the vRouter ports.
//
// Every frame that arrives on a port goes to the AF_XDP socket bound to the frame's RX queue,
// except the node's own traffic, which stays with the kernel (XDP_PASS):
//   - IPv4 / IPv6 (optionally behind one 802.1Q or 802.1ad tag) whose destination address is
//     in `host_addrs`;
//   - ARP (Ethernet/IPv4) whose target protocol address is in `host_addrs`;
//   - ICMPv6 neighbor solicitation / advertisement whose target address is in `host_addrs`
//     (directly after the IPv6 header, no extension headers).
// A queue without a socket in `xsks_map` falls back to the kernel too (the third argument of
// bpf_redirect_map is the action used when the lookup fails).
//
// Keys of `host_addrs` are 16-byte addresses; IPv4 addresses are stored IPv4-mapped
// (::ffff:a.b.c.d). The value is unused (1).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_SOCKETS 64
#define MAX_HOST_ADDRS 1024

#define ETH_HLEN_ 14
#define VLAN_HLEN_ 4
#define IPV4_HLEN_MIN 20
#define IPV6_HLEN 40
#define ARP_ETH_IPV4_LEN 28
#define ICMPV6_ND_LEN 24 /* type, code, checksum, reserved/flags (8) + target (16) */

#define ICMPV6_NS 135
#define ICMPV6_NA 136
#define IPPROTO_ICMPV6_ 58

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_SOCKETS);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

struct addr16 {
	__u8 b[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_HOST_ADDRS);
	__type(key, struct addr16);
	__type(value, __u8);
} host_addrs SEC(".maps");

static __always_inline int is_host_v6(const void *addr)
{
	struct addr16 key;

	__builtin_memcpy(&key, addr, sizeof(key));
	return bpf_map_lookup_elem(&host_addrs, &key) != NULL;
}

static __always_inline int is_host_v4(const void *addr)
{
	struct addr16 key = {};

	key.b[10] = 0xff;
	key.b[11] = 0xff;
	__builtin_memcpy(&key.b[12], addr, 4);
	return bpf_map_lookup_elem(&host_addrs, &key) != NULL;
}

/* l3 points at the first byte after the Ethernet header (and tag, if any). */
static __always_inline int for_host(const __u8 *l3, const void *data_end, __u16 proto)
{
	if (proto == bpf_htons(ETH_P_IP)) {
		if ((const void *)(l3 + IPV4_HLEN_MIN) > data_end)
			return 0;
		if ((l3[0] >> 4) != 4)
			return 0;
		return is_host_v4(l3 + 16); /* daddr */
	}

	if (proto == bpf_htons(ETH_P_IPV6)) {
		if ((const void *)(l3 + IPV6_HLEN) > data_end)
			return 0;
		if ((l3[0] >> 4) != 6)
			return 0;
		if (is_host_v6(l3 + 24)) /* daddr */
			return 1;
		if (l3[6] != IPPROTO_ICMPV6_) /* nexthdr */
			return 0;
		const __u8 *icmp = l3 + IPV6_HLEN;
		if ((const void *)(icmp + ICMPV6_ND_LEN) > data_end)
			return 0;
		if (icmp[0] != ICMPV6_NS && icmp[0] != ICMPV6_NA)
			return 0;
		return is_host_v6(icmp + 8); /* target address */
	}

	if (proto == bpf_htons(ETH_P_ARP)) {
		if ((const void *)(l3 + ARP_ETH_IPV4_LEN) > data_end)
			return 0;
		/* htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4 */
		if (l3[0] != 0 || l3[1] != 1 || l3[2] != 0x08 || l3[3] != 0x00 || l3[4] != 6 ||
		    l3[5] != 4)
			return 0;
		return is_host_v4(l3 + 24); /* target protocol address */
	}

	return 0;
}

SEC("xdp")
int vrouter_xdp(struct xdp_md *ctx)
{
	const __u8 *data = (const __u8 *)(long)ctx->data;
	const void *data_end = (const void *)(long)ctx->data_end;

	if ((const void *)(data + ETH_HLEN_) <= data_end) {
		__u16 proto = *(const __u16 *)(data + 12);

		if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
			if ((const void *)(data + ETH_HLEN_ + VLAN_HLEN_) <= data_end) {
				proto = *(const __u16 *)(data + ETH_HLEN_ + 2);
				if (for_host(data + ETH_HLEN_ + VLAN_HLEN_, data_end, proto))
					return XDP_PASS;
			}
		} else if (for_host(data + ETH_HLEN_, data_end, proto)) {
			return XDP_PASS;
		}
	}

	return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
}

/* No GPL-only helpers are used, so the program carries the project licence. */
char _license[] SEC("license") = "Apache-2.0";
