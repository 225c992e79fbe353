//! Turns a planned rule into the exact text `iptables-save` prints for it once installed.
//!
//! iptables rewrites rules on the way in: addresses move to the front, implicit `-m tcp`
//! appears, marks become hex, MARK becomes `--set-xmark`. Comparing the live tables with a plan
//! needs the plan in that form. Only the vocabulary `plan` emits is understood; anything else is
//! an error, never a guess. Checked against iptables 1.8.9, both nf_tables and legacy.

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv6Addr};

use crate::config::Cidr;
use crate::rules::Family;

/// A rule `plan` would never emit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// An argument outside the vocabulary.
    #[error("cannot predict how iptables-save prints {token:?} in rule {rule:?}")]
    Unsupported {
        /// The argument.
        token: String,
        /// The whole rule.
        rule: String,
    },
    /// An option that needs a value came last.
    #[error("{option} has no value in rule {rule:?}")]
    MissingValue {
        /// The option.
        option: String,
        /// The whole rule.
        rule: String,
    },
    /// An owner group name that does not resolve on this host.
    #[error("group {0:?} does not exist on this host, so iptables cannot match it")]
    UnknownGroup(String),
}

#[derive(Default)]
struct Parsed {
    src: Option<(bool, String)>,
    dst: Option<(bool, String)>,
    in_if: Option<(bool, String)>,
    out_if: Option<(bool, String)>,
    proto: Option<(bool, String)>,
    matches: Vec<(String, Vec<String>)>,
    target: Option<(String, Vec<String>)>,
}

/// The text after `-A CHAIN ` that iptables-save prints for `args`. `group_id` resolves owner
/// group names (iptables stores the gid).
pub fn saved_spec(
    family: Family,
    args: &[String],
    group_id: &dyn Fn(&str) -> Option<u32>,
) -> Result<String, CanonicalError> {
    let rule = args.join(" ");
    let unsupported = |t: &str| CanonicalError::Unsupported {
        token: t.to_string(),
        rule: rule.clone(),
    };
    let mut p = Parsed::default();
    let mut neg = false;
    let mut it = args.iter().map(String::as_str);
    while let Some(tok) = it.next() {
        let mut value = |opt: &str| {
            it.next()
                .map(str::to_string)
                .ok_or_else(|| CanonicalError::MissingValue {
                    option: opt.to_string(),
                    rule: rule.clone(),
                })
        };
        match tok {
            "!" => {
                neg = true;
                continue;
            }
            "-s" | "-d" => {
                let v = value(tok)?;
                let cidr: Cidr = v.parse().map_err(|_| unsupported(&v))?;
                let slot = if tok == "-s" { &mut p.src } else { &mut p.dst };
                *slot = Some((neg, saved_cidr(cidr)));
            }
            "-i" => p.in_if = Some((neg, value(tok)?)),
            "-o" => p.out_if = Some((neg, value(tok)?)),
            "-p" => p.proto = Some((neg, value(tok)?)),
            "-m" => {
                let name = value(tok)?;
                if !matches!(
                    name.as_str(),
                    "multiport" | "owner" | "conntrack" | "mark" | "connmark"
                ) {
                    return Err(unsupported(&name));
                }
                p.matches.push((name, Vec::new()));
            }
            "--dport" | "--sport" => {
                let v = value(tok)?;
                let proto = p
                    .proto
                    .as_ref()
                    .map(|(_, pr)| pr.clone())
                    .filter(|pr| pr == "tcp" || pr == "udp")
                    .ok_or_else(|| unsupported(tok))?;
                let idx = match p.matches.iter().position(|(n, _)| *n == proto) {
                    Some(i) => i,
                    None => {
                        p.matches.push((proto, Vec::new()));
                        p.matches.len() - 1
                    }
                };
                push_opt(&mut p.matches[idx].1, neg, tok, &v);
            }
            "--dports" | "--uid-owner" | "--gid-owner" | "--ctstate" | "--mark" => {
                let raw = value(tok)?;
                let (name, opts) = p.matches.last_mut().ok_or_else(|| unsupported(tok))?;
                let v = match (name.as_str(), tok) {
                    ("multiport", "--dports") | ("conntrack", "--ctstate") => raw,
                    ("owner", "--uid-owner") => {
                        numeric(&raw).ok_or_else(|| unsupported(&raw))?.to_string()
                    }
                    ("owner", "--gid-owner") => match numeric(&raw) {
                        Some(g) => g.to_string(),
                        None => group_id(&raw)
                            .ok_or_else(|| CanonicalError::UnknownGroup(raw.clone()))?
                            .to_string(),
                    },
                    ("mark" | "connmark", "--mark") => {
                        hex(&raw).ok_or_else(|| unsupported(&raw))?
                    }
                    _ => return Err(unsupported(tok)),
                };
                push_opt(opts, neg, tok, &v);
            }
            "-j" => {
                let target = value(tok)?;
                let rest: Vec<String> = it.by_ref().map(str::to_string).collect();
                let opts = target_options(family, &target, &rest)
                    .ok_or_else(|| unsupported(&rest.join(" ")))?;
                p.target = Some((target, opts));
            }
            other => return Err(unsupported(other)),
        }
        neg = false;
    }
    Ok(render(&p))
}

fn push_opt(opts: &mut Vec<String>, neg: bool, opt: &str, value: &str) {
    if neg {
        opts.push("!".to_string());
    }
    opts.push(opt.to_string());
    opts.push(value.to_string());
}

fn render(p: &Parsed) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut addr = |flag: &str, slot: &Option<(bool, String)>| {
        if let Some((neg, v)) = slot {
            if *neg {
                out.push("!".into());
            }
            out.push(flag.into());
            out.push(v.clone());
        }
    };
    addr("-s", &p.src);
    addr("-d", &p.dst);
    addr("-i", &p.in_if);
    addr("-o", &p.out_if);
    addr("-p", &p.proto);
    for (name, opts) in &p.matches {
        out.push("-m".into());
        out.push(name.clone());
        out.extend(opts.iter().cloned());
    }
    if let Some((target, opts)) = &p.target {
        out.push("-j".into());
        out.push(target.clone());
        out.extend(opts.iter().cloned());
    }
    out.join(" ")
}

/// Target options as iptables-save prints them; `None` for options outside the vocabulary.
fn target_options(family: Family, target: &str, rest: &[String]) -> Option<Vec<String>> {
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let full = "0xffffffff";
    let out: Vec<String> = match (target, rest.as_slice()) {
        (_, []) if !matches!(target, "REDIRECT" | "TPROXY" | "MARK" | "CONNMARK" | "CT") => {
            Vec::new()
        }
        ("REDIRECT", ["--to-ports" | "--to-port", port]) => {
            vec!["--to-ports".into(), (*port).into()]
        }
        ("MARK", ["--set-mark", mark]) => {
            vec!["--set-xmark".into(), format!("{}/{full}", hex(mark)?)]
        }
        ("CONNMARK", [op @ ("--save-mark" | "--restore-mark")]) => vec![
            (*op).into(),
            "--nfmask".into(),
            full.into(),
            "--ctmask".into(),
            full.into(),
        ],
        ("CT", ["--zone", zone]) => vec!["--zone".into(), numeric(zone)?.to_string()],
        ("TPROXY", opts) => {
            let mut mark = None;
            let mut port = None;
            let mut i = 0;
            while i + 1 < opts.len() {
                match opts[i] {
                    "--tproxy-mark" => mark = Some(opts[i + 1]),
                    "--on-port" => port = Some(opts[i + 1]),
                    _ => return None,
                }
                i += 2;
            }
            if i != opts.len() {
                return None;
            }
            let (value, mask) = match mark?.split_once('/') {
                Some((v, m)) => (v, m),
                None => (mark?, full),
            };
            let mask = u32::from_str_radix(mask.trim_start_matches("0x"), 16).ok()?;
            let on_ip = match family {
                Family::V4 => "0.0.0.0",
                Family::V6 => "::",
            };
            vec![
                "--on-port".into(),
                numeric(port?)?.to_string(),
                "--on-ip".into(),
                on_ip.into(),
                "--tproxy-mark".into(),
                format!("{}/{:#x}", hex(value)?, mask),
            ]
        }
        _ => return None,
    };
    Some(out)
}

fn numeric(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn hex(s: &str) -> Option<String> {
    numeric(s).map(|v| format!("{v:#x}"))
}

/// A prefix as iptables prints it: host bits cleared, IPv6 in glibc `inet_ntop` style.
pub fn saved_cidr(cidr: Cidr) -> String {
    let net = cidr.network();
    match net.addr() {
        IpAddr::V4(a) => format!("{a}/{}", net.prefix_len()),
        IpAddr::V6(a) => format!("{}/{}", glibc_ipv6(a), net.prefix_len()),
    }
}

/// glibc's `inet_ntop(AF_INET6)`: like RFC 5952, but `::a.b.c.d` for IPv4-compatible and
/// `::ffff:a.b.c.d` for IPv4-mapped addresses.
pub fn glibc_ipv6(addr: Ipv6Addr) -> String {
    let w = addr.segments();
    // Longest run of zero words (at least two); the first one wins a tie.
    let (mut best, mut cur): ((usize, usize), Option<(usize, usize)>) = ((0, 0), None);
    for (i, word) in w.iter().enumerate() {
        if *word == 0 {
            let run = cur.map_or((i, 1), |(b, l)| (b, l + 1));
            cur = Some(run);
            if run.1 > best.1 {
                best = run;
            }
        } else {
            cur = None;
        }
    }
    let best = (best.1 >= 2).then_some(best);
    let mut out = String::new();
    let mut i = 0;
    while i < 8 {
        if let Some((b, l)) = best
            && i == b
        {
            out.push(':');
            if b + l == 8 {
                out.push(':');
            }
            i += l;
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6
            && let Some((0, l)) = best
            && (l == 6 || (l == 5 && w[5] == 0xffff))
        {
            let o = addr.octets();
            out.push_str(&format!("{}.{}.{}.{}", o[12], o[13], o[14], o[15]));
            break;
        }
        out.push_str(&format!("{:x}", w[i]));
        i += 1;
    }
    out
}
