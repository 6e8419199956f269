//! Opt-in egress for local computers.
//!
//! A computer's network namespace has loopback only. One that asks for
//! egress also gets a veth pair: `rw<slot>` on the host, `eth0` inside,
//! addressed from a /30 of `10.213.0.0/16`, with a default route through
//! the host, which masquerades its traffic. IPv6 is off on the pair. An
//! nftables table (`inet raworc`) keeps the rest out of reach: nothing from
//! a computer reaches the host itself (so neither the control plane nor any
//! other service on it), other computers, private, link-local and loopback
//! ranges, or anything over IPv6 — only the host's DNS servers are let
//! through. Turning on IPv4 forwarding is the one machine-wide change. The pair disappears with the
//! computer's namespace; the slot is given back when the computer ends.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::{io, run_tool as run, RuntimeError};

/// Computers' addresses: a /30 each.
const BASE: [u8; 2] = [10, 213];
const SLOTS: u16 = 16_384;
/// Where a computer's slot is recorded, for adoption after a restart.
pub(crate) const SLOT_FILE: &str = "net";

#[derive(Default)]
pub(crate) struct Egress {
    used: Mutex<BTreeSet<u16>>,
    rules: Mutex<bool>,
}

/// The host's and the computer's addresses of `slot`.
fn addresses(slot: u16) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(Ipv4Addr::new(BASE[0], BASE[1], 0, 0)) + u32::from(slot) * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

fn interface(slot: u16) -> String {
    format!("rw{slot}")
}

/// IPv4 name servers of this machine that a computer can reach through NAT.
fn name_servers() -> Vec<Ipv4Addr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback() && !a.is_unspecified())
        .collect()
}

/// The nftables table, replaced whole in one transaction.
fn ruleset(dns: &[Ipv4Addr]) -> String {
    let dns_rules = if dns.is_empty() {
        String::new()
    } else {
        let list = dns
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "    iifname \"rw*\" ip daddr {{ {list} }} udp dport 53 accept\n\
             \x20   iifname \"rw*\" ip daddr {{ {list} }} tcp dport 53 accept\n"
        )
    };
    format!(
        "add table inet raworc\n\
         delete table inet raworc\n\
         table inet raworc {{\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority filter - 5; policy accept;\n\
         \x20   iifname \"rw*\" drop\n\
         \x20 }}\n\
         \x20 chain forward {{\n\
         \x20   type filter hook forward priority filter - 5; policy accept;\n\
         \x20   meta nfproto ipv6 iifname \"rw*\" drop\n\
         \x20   meta nfproto ipv6 oifname \"rw*\" drop\n\
         \x20   oifname \"rw*\" ct state established,related accept\n\
         \x20   oifname \"rw*\" drop\n\
         {dns_rules}\
         \x20   iifname \"rw*\" ip daddr {{ 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/3 }} drop\n\
         \x20   iifname \"rw*\" accept\n\
         \x20 }}\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   meta nfproto ipv6 return\n\
         \x20   ip saddr {}.{}.0.0/16 oifname != \"rw*\" masquerade\n\
         \x20 }}\n\
         }}\n",
        BASE[0], BASE[1]
    )
}

impl Egress {
    /// Installs the forwarding sysctl and the table, once per run.
    fn ensure_rules(&self) -> Result<(), RuntimeError> {
        let mut installed = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        if *installed {
            return Ok(());
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(io("enabling IPv4 forwarding"))?;
        let mut nft = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("running nft (install nftables for egress)"))?;
        if let Some(mut stdin) = nft.stdin.take() {
            use std::io::Write;
            stdin
                .write_all(ruleset(&name_servers()).as_bytes())
                .map_err(io("writing the nftables rules"))?;
        }
        let out = nft.wait_with_output().map_err(io("running nft"))?;
        if !out.status.success() {
            return Err(RuntimeError::Start(format!(
                "installing the egress rules failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        *installed = true;
        Ok(())
    }

    fn allocate(&self) -> Result<u16, RuntimeError> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let slot = (0..SLOTS)
            .find(|s| !used.contains(s))
            .ok_or_else(|| RuntimeError::Start("no egress address is left".into()))?;
        used.insert(slot);
        Ok(slot)
    }

    /// Takes `slot` again for a computer adopted after a restart.
    pub fn reserve(&self, slot: u16) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(slot);
    }

    pub fn release(&self, slot: u16) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&slot);
    }

    /// Gives the network namespace of process `pid` a route out, and
    /// records the slot in `dir`.
    pub fn attach(&self, pid: u32, dir: &Path) -> Result<u16, RuntimeError> {
        self.ensure_rules()?;
        let slot = self.allocate()?;
        let result = (|| {
            let (host, inside) = addresses(slot);
            let outer = interface(slot);
            let pid = pid.to_string();
            // A stale pair of an earlier run would block the name.
            let _ = run("ip", &["link", "del", &outer]);
            run(
                "ip",
                &[
                    "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &pid,
                ],
            )?;
            // No IPv6 on either end (no link-local path to the host).
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{outer}/disable_ipv6"), "1");
            let _ = run(
                "nsenter",
                &[
                    "--target",
                    &pid,
                    "--net",
                    "sh",
                    "-c",
                    "echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6",
                ],
            );
            run("ip", &["addr", "add", &format!("{host}/30"), "dev", &outer])?;
            run("ip", &["link", "set", &outer, "up"])?;
            let inside_cmd = |args: &[&str]| {
                let mut all = vec!["--target", pid.as_str(), "--net", "ip"];
                all.extend_from_slice(args);
                run("nsenter", &all)
            };
            inside_cmd(&["addr", "add", &format!("{inside}/30"), "dev", "eth0"])?;
            inside_cmd(&["link", "set", "eth0", "up"])?;
            inside_cmd(&["route", "add", "default", "via", &host.to_string()])?;
            std::fs::write(dir.join(SLOT_FILE), slot.to_string())
                .map_err(io("recording the egress slot"))
        })();
        if result.is_err() {
            let _ = run("ip", &["link", "del", &interface(slot)]);
            self.release(slot);
        }
        result.map(|()| slot)
    }
}

/// Name servers for a computer's `/etc/resolv.conf`.
pub(crate) fn resolv_conf() -> String {
    name_servers()
        .iter()
        .map(|a| format!("nameserver {a}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_get_disjoint_slash_30s() {
        assert_eq!(
            addresses(0),
            (Ipv4Addr::new(10, 213, 0, 1), Ipv4Addr::new(10, 213, 0, 2))
        );
        assert_eq!(
            addresses(64),
            (Ipv4Addr::new(10, 213, 1, 1), Ipv4Addr::new(10, 213, 1, 2))
        );
        assert_eq!(addresses(SLOTS - 1).1, Ipv4Addr::new(10, 213, 255, 254));
        assert!(
            interface(SLOTS - 1).len() <= 15,
            "interface names fit IFNAMSIZ"
        );
    }

    #[test]
    fn the_ruleset_lets_dns_through_before_private_ranges_are_dropped() {
        let rules = ruleset(&[Ipv4Addr::new(10, 255, 255, 53)]);
        let dns = rules.find("10.255.255.53").unwrap();
        let private = rules.find("10.0.0.0/8").unwrap();
        assert!(dns < private);
        assert!(rules.contains("iifname \"rw*\" drop"));
        assert!(ruleset(&[]).contains("masquerade"));
    }
}
