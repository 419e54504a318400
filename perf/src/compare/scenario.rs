//! The scenarios: one topology each, the kernel's way of doing the job and ours.
//!
//! Every scenario uses three namespaces and two veth pairs:
//!
//! ```text
//!   gen: g0 ---- d0 :dut: d1 ---- s0 :sink
//! ```
//!
//! The generator transmits on `g0`, the device under test forwards from `d0` to `d1`, the sink
//! receives on `s0`. Traffic is one-way UDP (as RFC 2544 throughput tests are); the sink's XDP
//! program takes every frame arriving on `s0`, so the DUT reaches the sink through a static
//! neighbor entry (no ARP). Addressing per scenario:
//!
//! | scenario | g0 (source) | DUT | s0 (sink) | what the DUT does |
//! |---|---|---|---|---|
//! | `fwd` | 10.0.1.2 | 10.0.1.1, 10.0.2.1 | 10.0.2.2 | routes |
//! | `nat` | 10.0.1.2 | 10.0.1.1, 203.0.113.1 | 203.0.113.2 | masquerades to 203.0.113.1 |
//! | `acl-10k` | 10.0.1.2 | as `fwd` | 10.0.2.2 | routes through a 10,001-rule policy on d1 out |
//! | `vxlan-encap` | pod 10.244.1.2 | 10.244.1.1, VTEP 192.168.100.1 | VTEP 192.168.100.2 | encapsulates (VNI 100) towards the remote pod 10.244.2.2 |
//! | `vxlan-decap` | VTEP 192.168.100.2, inner 10.244.2.2 | VTEP 192.168.100.1, 10.244.1.1 | pod 10.244.1.2 | decapsulates and routes |
//! | `full` | pod 10.244.1.2 | as `vxlan-encap` | VTEP 192.168.100.2 | a 10,001-rule policy on d0 in, DNAT of the Service 10.96.0.10:9 to 10.244.2.2:9, encapsulation |
//!
//! The kernel's equivalents: `ip_forward`; nftables masquerade; nftables filter chains of the
//! same rules (`ct state established,related accept`, the rules, `drop`: one-way UDP stays
//! `new`, so the kernel classifies every packet, as it would); a Linux `vxlan` device set up
//! as flannel does (`nolearning`, static fdb and neighbor entries, UDP checksum off like
//! ours); nftables DNAT for the Service. Underlay links of the VXLAN scenarios have MTU 1600
//! (1500-byte inner frames fit, as on a jumbo-frame fabric).

use super::lab::{run_with_input, Lab, Result};

/// The VXLAN MACs: ours (`0e:..:01`) and the remote VTEP's (`0e:..:02`).
const OUR_VXLAN_MAC: &str = "0e:00:00:00:64:01";
const REMOTE_VXLAN_MAC: &str = "0e:00:00:00:64:02";
/// Rules of the large policies (plus the one that admits the test traffic).
const POLICY_RULES: usize = 10_000;

/// A comparison scenario.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Plain IPv4 forwarding (kernel: ip_forward).
    Fwd,
    /// Masquerade to an external network (kernel: nftables masquerade).
    Nat,
    /// VXLAN encapsulation towards a remote VTEP (kernel: vxlan device).
    VxlanEncap,
    /// VXLAN decapsulation from a remote VTEP (kernel: vxlan device).
    VxlanDecap,
    /// Forwarding through a 10,001-rule policy (kernel: nftables chain).
    #[value(name = "acl-10k")]
    #[serde(rename = "acl-10k")]
    Acl10k,
    /// Policy + Service DNAT + VXLAN encapsulation (kernel: nftables + vxlan device).
    Full,
}

impl Scenario {
    /// Every scenario, in report order.
    #[cfg(test)]
    pub const ALL: [Scenario; 6] = [
        Scenario::Fwd,
        Scenario::Nat,
        Scenario::VxlanEncap,
        Scenario::VxlanDecap,
        Scenario::Acl10k,
        Scenario::Full,
    ];

    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fwd => "fwd",
            Scenario::Nat => "nat",
            Scenario::VxlanEncap => "vxlan-encap",
            Scenario::VxlanDecap => "vxlan-decap",
            Scenario::Acl10k => "acl-10k",
            Scenario::Full => "full",
        }
    }

    fn overlay(self) -> bool {
        matches!(
            self,
            Scenario::VxlanEncap | Scenario::VxlanDecap | Scenario::Full
        )
    }
}

/// The built topology of one scenario.
pub struct Topology {
    /// The scenario.
    pub scenario: Scenario,
    /// Namespaces.
    pub gen_ns: String,
    /// The DUT's namespace.
    pub dut_ns: String,
    /// The sink's namespace.
    pub sink_ns: String,
    d0_mac: String,
    s0_mac: String,
}

impl Topology {
    /// Creates the namespaces and links of `scenario` in `lab` (addresses of the generator
    /// and sink sides only; the DUT side is set by [`Topology::kernel_on`] or by our
    /// configuration).
    pub fn build(lab: &mut Lab, scenario: Scenario) -> Result<Topology> {
        let gen_ns = lab.add_ns(&format!("{}-gen", scenario.name()))?;
        let dut_ns = lab.add_ns(&format!("{}-dut", scenario.name()))?;
        let sink_ns = lab.add_ns(&format!("{}-sink", scenario.name()))?;
        let (gen_mtu, sink_mtu) = match scenario {
            Scenario::VxlanDecap => (1600, 1500),
            Scenario::VxlanEncap | Scenario::Full => (1500, 1600),
            _ => (1500, 1500),
        };
        lab.veth(&gen_ns, "g0", &dut_ns, "d0", gen_mtu)?;
        lab.veth(&dut_ns, "d1", &sink_ns, "s0", sink_mtu)?;
        let (g0, s0) = match scenario {
            Scenario::Fwd | Scenario::Acl10k => ("10.0.1.2/24", "10.0.2.2/24"),
            Scenario::Nat => ("10.0.1.2/24", "203.0.113.2/24"),
            Scenario::VxlanEncap | Scenario::Full => ("10.244.1.2/24", "192.168.100.2/24"),
            Scenario::VxlanDecap => ("192.168.100.2/24", "10.244.1.2/24"),
        };
        lab.ip(&gen_ns, &["addr", "add", g0, "dev", "g0"])?;
        lab.ip(&sink_ns, &["addr", "add", s0, "dev", "s0"])?;
        let d0_mac = lab.mac(&dut_ns, "d0")?;
        let s0_mac = lab.mac(&sink_ns, "s0")?;
        Ok(Topology {
            scenario,
            gen_ns,
            dut_ns,
            sink_ns,
            d0_mac,
            s0_mac,
        })
    }

    /// Source and destination of the generated (inner) packets.
    pub fn endpoints(&self) -> (&'static str, &'static str) {
        match self.scenario {
            Scenario::Fwd | Scenario::Acl10k => ("10.0.1.2", "10.0.2.2"),
            Scenario::Nat => ("10.0.1.2", "203.0.113.2"),
            Scenario::VxlanEncap => ("10.244.1.2", "10.244.2.2"),
            Scenario::Full => ("10.244.1.2", "10.96.0.10"),
            Scenario::VxlanDecap => ("10.244.2.2", "10.244.1.2"),
        }
    }

    /// The MAC of the DUT's ingress link (the generator's destination MAC).
    pub fn d0_mac(&self) -> &str {
        &self.d0_mac
    }

    /// The generator's flags (besides size, flows, rate and bounds) for this scenario.
    pub fn gen_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--netns".into(),
            self.gen_ns.clone(),
            "--iface".into(),
            "g0".into(),
            "--dst-mac".into(),
            self.d0_mac.clone(),
            "--dport".into(),
            "9".into(),
            "--sport".into(),
            "10000".into(),
        ];
        let (src, dst) = self.endpoints();
        args.extend(["--src".into(), src.into(), "--dst".into(), dst.into()]);
        if self.scenario == Scenario::VxlanDecap {
            args.extend(
                [
                    "--vxlan",
                    "100",
                    "--outer-src",
                    "192.168.100.2",
                    "--outer-dst",
                    "192.168.100.1",
                    "--inner-src-mac",
                    REMOTE_VXLAN_MAC,
                    "--inner-dst-mac",
                    OUR_VXLAN_MAC,
                ]
                .map(String::from),
            );
        }
        args
    }

    /// Sets the DUT up as the kernel does the job. `dut_cpu`: where its receive processing
    /// runs (RPS on the ingress link), away from the generator's CPU.
    pub fn kernel_on(&self, lab: &Lab, dut_cpu: usize) -> Result<()> {
        let ns = &self.dut_ns;
        let ip = |args: &[&str]| lab.ip(ns, args).map(drop);
        match self.scenario {
            Scenario::Fwd | Scenario::Acl10k => {
                ip(&["addr", "add", "10.0.1.1/24", "dev", "d0"])?;
                ip(&["addr", "add", "10.0.2.1/24", "dev", "d1"])?;
                self.sink_neighbor(lab, "10.0.2.2", "d1")?;
            }
            Scenario::Nat => {
                ip(&["addr", "add", "10.0.1.1/24", "dev", "d0"])?;
                ip(&["addr", "add", "203.0.113.1/24", "dev", "d1"])?;
                self.sink_neighbor(lab, "203.0.113.2", "d1")?;
            }
            Scenario::VxlanEncap | Scenario::Full => {
                ip(&["addr", "add", "10.244.1.1/24", "dev", "d0"])?;
                ip(&["addr", "add", "192.168.100.1/24", "dev", "d1"])?;
                self.kernel_vxlan(lab, "d1")?;
                ip(&[
                    "route",
                    "add",
                    "10.244.2.0/24",
                    "via",
                    "10.244.2.0",
                    "dev",
                    "vx0",
                    "onlink",
                ])?;
                ip(&[
                    "neigh",
                    "replace",
                    "10.244.2.0",
                    "lladdr",
                    REMOTE_VXLAN_MAC,
                    "dev",
                    "vx0",
                    "nud",
                    "permanent",
                ])?;
                lab.exec(
                    ns,
                    &[
                        "bridge",
                        "fdb",
                        "append",
                        REMOTE_VXLAN_MAC,
                        "dst",
                        "192.168.100.2",
                        "dev",
                        "vx0",
                    ],
                )?;
                self.sink_neighbor(lab, "192.168.100.2", "d1")?;
            }
            Scenario::VxlanDecap => {
                ip(&["addr", "add", "192.168.100.1/24", "dev", "d0"])?;
                ip(&["addr", "add", "10.244.1.1/24", "dev", "d1"])?;
                self.kernel_vxlan(lab, "d0")?;
                self.sink_neighbor(lab, "10.244.1.2", "d1")?;
            }
        }
        if let Some(rules) = self.nftables() {
            run_with_input("ip", &["netns", "exec", ns, "nft", "-f", "-"], &rules)?;
        }
        lab.exec(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        self.set_rps(lab, Some(dut_cpu))
    }

    /// Undoes [`Topology::kernel_on`] (the links and the generator/sink sides stay).
    pub fn kernel_off(&self, lab: &Lab) -> Result<()> {
        let ns = &self.dut_ns;
        lab.exec(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=0"])?;
        let _ = lab.exec(ns, &["nft", "flush", "ruleset"]);
        let _ = lab.exec(ns, &["conntrack", "-F"]);
        if self.scenario.overlay() {
            lab.ip(ns, &["link", "del", "vx0"])?;
        }
        for dev in ["d0", "d1"] {
            lab.ip(ns, &["addr", "flush", "dev", dev])?;
            lab.ip(ns, &["neigh", "flush", "dev", dev])?;
        }
        self.set_rps(lab, None)
    }

    /// Steers what `d0` receives to `cpu` (RPS), or back to the receiving CPU (`None`): the
    /// kernel's forwarding, or our generic-mode XDP redirect and its copy into the UMEM,
    /// then run on the DUT's CPU instead of in the generator's `sendto`.
    pub fn set_rps(&self, lab: &Lab, cpu: Option<usize>) -> Result<()> {
        let mask = cpu.map_or("0".to_string(), |cpu| format!("{:x}", 1u64 << cpu));
        lab.exec(
            &self.dut_ns,
            &[
                "sh",
                "-c",
                &format!("echo {mask} > /sys/class/net/d0/queues/rx-0/rps_cpus"),
            ],
        )
        .map(drop)
    }

    fn sink_neighbor(&self, lab: &Lab, ip: &str, dev: &str) -> Result<()> {
        lab.ip(
            &self.dut_ns,
            &[
                "neigh",
                "replace",
                ip,
                "lladdr",
                &self.s0_mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ],
        )
        .map(drop)
    }

    /// A flannel-style vxlan device `vx0` on `uplink` (VTEP 192.168.100.1, our VXLAN MAC).
    fn kernel_vxlan(&self, lab: &Lab, uplink: &str) -> Result<()> {
        let ns = &self.dut_ns;
        lab.ip(
            ns,
            &[
                "link",
                "add",
                "vx0",
                "address",
                OUR_VXLAN_MAC,
                "type",
                "vxlan",
                "id",
                "100",
                "local",
                "192.168.100.1",
                "dev",
                uplink,
                "dstport",
                "4789",
                "nolearning",
                "noudpcsum",
            ],
        )?;
        lab.ip(ns, &["link", "set", "vx0", "mtu", "1500", "up"])?;
        lab.ip(ns, &["addr", "add", "10.244.1.0/32", "dev", "vx0"])?;
        Ok(())
    }

    /// The nftables ruleset of the scenario, if it has one.
    fn nftables(&self) -> Option<String> {
        match self.scenario {
            Scenario::Nat => Some(
                "table ip vpc {\n chain post {\n  type nat hook postrouting priority srcnat; policy accept;\n  \
                 oifname \"d1\" ip saddr 10.0.1.0/24 masquerade\n }\n}\n"
                    .into(),
            ),
            Scenario::Acl10k => Some(policy_nft("d1", "oifname", "10.0.1.2", None)),
            Scenario::Full => Some(policy_nft(
                "d0",
                "iifname",
                "10.244.1.2",
                Some("  chain pre {\n   type nat hook prerouting priority dstnat; policy accept;\n   \
                      ip daddr 10.96.0.10 udp dport 9 dnat to 10.244.2.2:9\n  }\n"),
            )),
            _ => None,
        }
    }

    /// Our configuration (vrouter-control TOML) for the scenario.
    pub fn vrouter_config(&self) -> String {
        let neighbor = |ip: &str, dev: &str| {
            format!(
                "[[neighbor]]\nip = \"{ip}\"\nmac = \"{}\"\ndev = \"{dev}\"\n",
                self.s0_mac
            )
        };
        let port = |name: &str, vrf: u32, addr: &str| {
            format!("[[port]]\nname = \"{name}\"\nvrf = {vrf}\naddresses = [\"{addr}\"]\n")
        };
        let mut config = String::new();
        match self.scenario {
            Scenario::Fwd | Scenario::Acl10k => {
                config += &port("d0", 0, "10.0.1.1/24");
                config += &port("d1", 0, "10.0.2.1/24");
                config += &neighbor("10.0.2.2", "d1");
                if self.scenario == Scenario::Acl10k {
                    config += &policy_toml("d1", "out", "10.0.1.2");
                }
            }
            Scenario::Nat => {
                config += &port("d0", 0, "10.0.1.1/24");
                config += &port("d1", 0, "203.0.113.1/24");
                config += &neighbor("203.0.113.2", "d1");
                config += "[[snat]]\nsource = \"10.0.1.0/24\"\nout = \"d1\"\n";
            }
            Scenario::VxlanEncap | Scenario::Full => {
                config += "[[vrf]]\nid = 1\n";
                config += &port("d0", 1, "10.244.1.1/24");
                config += &port("d1", 0, "192.168.100.1/24");
                config += &neighbor("192.168.100.2", "d1");
                config += &format!(
                    "[[vxlan]]\nvni = 100\nvrf = 1\nlocal = \"192.168.100.1\"\ndev = \"d1\"\nmac = \"{OUR_VXLAN_MAC}\"\n"
                );
                config += &format!(
                    "[[route]]\nprefix = \"10.244.2.0/24\"\nvrf = 1\nvxlan = 100\nremote = \"192.168.100.2\"\nmac = \"{REMOTE_VXLAN_MAC}\"\n"
                );
                if self.scenario == Scenario::Full {
                    config += "[[service]]\nvip = \"10.96.0.10:9\"\nprotocol = \"udp\"\nbackends = [\"10.244.2.2:9\"]\nvrf = 1\n";
                    config += &policy_toml("d0", "in", "10.244.1.2");
                }
            }
            Scenario::VxlanDecap => {
                config += "[[vrf]]\nid = 1\n";
                config += &port("d0", 0, "192.168.100.1/24");
                config += &port("d1", 1, "10.244.1.1/24");
                config += &neighbor("10.244.1.2", "d1");
                config += &format!(
                    "[[vxlan]]\nvni = 100\nvrf = 1\nlocal = \"192.168.100.1\"\ndev = \"d0\"\nmac = \"{OUR_VXLAN_MAC}\"\n"
                );
            }
        }
        config
    }
}

/// The large policy's peers: `POLICY_RULES` single addresses of 10.1.0.0/16 (3 apart), each
/// allowed TCP to one port (8000-8049), with the test source's UDP-to-9 rule in the middle
/// (a linear classifier scans half the rules for it), as kube-proxy-era per-peer rules are
/// written.
fn policy_peers(source: &str) -> Vec<(String, &'static str, u16)> {
    let mut peers = Vec::with_capacity(POLICY_RULES + 1);
    for i in 0..POLICY_RULES {
        if i == POLICY_RULES / 2 {
            peers.push((source.to_string(), "udp", 9));
        }
        let addr = std::net::Ipv4Addr::from(0x0a01_0000u32 + 3 * i as u32);
        peers.push((addr.to_string(), "tcp", 8000 + (i % 50) as u16));
    }
    peers
}

fn policy_toml(port: &str, direction: &str, source: &str) -> String {
    let mut out = format!("[[acl]]\nport = \"{port}\"\ndirection = \"{direction}\"\n");
    for (peer, proto, dport) in policy_peers(source) {
        out += &format!(
            "[[acl.rule]]\nsrc = \"{peer}/32\"\nprotocol = \"{proto}\"\ndst_ports = \"{dport}\"\naction = \"allow\"\n"
        );
    }
    out
}

fn policy_nft(dev: &str, match_dev: &str, source: &str, extra_chain: Option<&str>) -> String {
    let mut out = String::from("table ip vpc {\n");
    if let Some(chain) = extra_chain {
        out += chain;
    }
    out += " chain vpc_filter {\n  type filter hook forward priority filter; policy accept;\n";
    out += &format!("  {match_dev} != \"{dev}\" accept\n  ct state established,related accept\n");
    for (peer, proto, dport) in policy_peers(source) {
        out += &format!("  ip saddr {peer} {proto} dport {dport} accept\n");
    }
    out += "  drop\n }\n}\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_have_the_same_rules_in_both_forms() {
        let toml = policy_toml("d1", "out", "10.0.1.2");
        let nft = policy_nft("d1", "oifname", "10.0.1.2", None);
        assert_eq!(toml.matches("[[acl.rule]]").count(), POLICY_RULES + 1);
        assert_eq!(nft.matches(" dport ").count(), POLICY_RULES + 1);
        let ours = toml
            .find("src = \"10.0.1.2/32\"")
            .expect("the test source's rule");
        assert!(
            ours > toml.len() / 3 && ours < 2 * toml.len() / 3,
            "in the middle"
        );
        assert!(nft.contains("ip saddr 10.0.1.2 udp dport 9 accept"));
    }

    #[test]
    fn every_scenario_has_a_name_and_a_configuration() {
        let topology = |scenario| Topology {
            scenario,
            gen_ns: "g".into(),
            dut_ns: "d".into(),
            sink_ns: "s".into(),
            d0_mac: "02:00:00:00:00:0a".into(),
            s0_mac: "02:00:00:00:00:0b".into(),
        };
        for scenario in Scenario::ALL {
            let t = topology(scenario);
            let config = t.vrouter_config();
            assert!(config.contains("name = \"d0\"") && config.contains("name = \"d1\""));
            assert!(
                config.contains("02:00:00:00:00:0b"),
                "the sink's static neighbor"
            );
            let gen = t.gen_args().join(" ");
            assert!(gen.contains("--dst-mac 02:00:00:00:00:0a"), "{gen}");
            assert_eq!(
                <Scenario as clap::ValueEnum>::from_str(scenario.name(), false),
                Ok(scenario)
            );
        }
    }
}
