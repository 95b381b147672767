//! The words of calicoctl's v1 `profile` command, parsed into a [`ProfileCommand`].
//!
//! The grammar is calicoctl 1.x's (its docopt usage is [`USAGE`]), with two leniencies its
//! runbooks rely on: a CIDR may follow `from`/`to` without the `cidr` keyword (calicoctl 0.x),
//! and `rule remove` takes a bare position as well as `--at=N`.

use datastore::model::{Port, Protocol};

use super::edit::EditOp;
use super::rules::{check_tag, normalize_net, End, V1Action, V1Protocol, V1Rule};
use super::{Direction, V1Error};

/// The v1 profile command grammar, printed with every usage error.
pub const USAGE: &str = "\
Usage:
  tabbyctl profile show [--detailed]
  tabbyctl profile add <PROFILE>
  tabbyctl profile remove <PROFILE> [--no-check]
  tabbyctl profile <PROFILE> tag show
  tabbyctl profile <PROFILE> tag (add|remove) <TAG>
  tabbyctl profile <PROFILE> rule add (inbound|outbound) [--at=<POSITION>] <RULE>
  tabbyctl profile <PROFILE> rule remove (inbound|outbound) (--at=<POSITION>|<POSITION>|<RULE>)
  tabbyctl profile <PROFILE> rule show
  tabbyctl profile <PROFILE> rule json
  tabbyctl profile <PROFILE> rule update < rules.json

<RULE>:
  (allow|deny) [(
    (tcp|udp) [(from [(ports <SRCPORTS>)] [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
              [(to   [(ports <DSTPORTS>)] [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])] |
    (icmp|icmpv6) [(type <ICMPTYPE> [(code <ICMPCODE>)])]
              [(from [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
              [(to   [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])] |
    [(from [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
    [(to   [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])]
  )]

Ports are comma-separated ports and ranges (80,443,8000:8080); positions count from 1.
`rule update` reads calicoctl's v1 JSON ({\"id\", \"inbound_rules\", \"outbound_rules\"}).";

/// One parsed `tabbyctl profile …` command.
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileCommand {
    Show {
        detailed: bool,
    },
    Remove {
        name: String,
        no_check: bool,
    },
    /// Commands that change one profile (including `add`).
    Edit {
        name: String,
        op: Box<EditOp>,
    },
    TagShow {
        name: String,
    },
    RuleShow {
        name: String,
    },
    RuleJson {
        name: String,
    },
    /// Reads v1 JSON from stdin; the caller turns it into [`EditOp::RuleUpdate`].
    RuleUpdate {
        name: String,
    },
}

/// Parses the words after `tabbyctl profile`.
pub fn parse_command(args: &[String]) -> Result<ProfileCommand, V1Error> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let name = |n: &str| n.to_owned();
    let edit = |n: &str, op: EditOp| Ok(ProfileCommand::Edit { name: name(n), op: Box::new(op) });
    match words.as_slice() {
        [] => Err(V1Error::usage("missing profile command")),
        ["show"] => Ok(ProfileCommand::Show { detailed: false }),
        ["show", "--detailed"] => Ok(ProfileCommand::Show { detailed: true }),
        ["add", n] => edit(n, EditOp::Add),
        ["remove", n] => Ok(ProfileCommand::Remove { name: name(n), no_check: false }),
        ["remove", n, "--no-check"] | ["remove", "--no-check", n] => {
            Ok(ProfileCommand::Remove { name: name(n), no_check: true })
        }
        [n, "tag", "show"] => Ok(ProfileCommand::TagShow { name: name(n) }),
        [n, "tag", "add", tag] => edit(n, EditOp::TagAdd((*tag).to_owned())),
        [n, "tag", "remove", tag] => edit(n, EditOp::TagRemove((*tag).to_owned())),
        [n, "rule", "show"] => Ok(ProfileCommand::RuleShow { name: name(n) }),
        [n, "rule", "json"] => Ok(ProfileCommand::RuleJson { name: name(n) }),
        [n, "rule", "update"] => Ok(ProfileCommand::RuleUpdate { name: name(n) }),
        [n, "rule", "add", rest @ ..] => {
            let (direction, position, rest) = direction_and_position(rest)?;
            let rule = parse_rule(&rest)?;
            edit(n, EditOp::RuleAdd { direction, position, rule })
        }
        [n, "rule", "remove", rest @ ..] => {
            let (direction, position, rest) = direction_and_position(rest)?;
            let op = match (position, rest.as_slice()) {
                (Some(_), [_, ..]) => {
                    return Err(V1Error::usage("give either --at=<POSITION> or a rule, not both"))
                }
                (Some(position), []) => EditOp::RuleRemoveAt { direction, position },
                (None, []) => {
                    return Err(V1Error::usage("rule remove needs a position or a rule"));
                }
                (None, [word]) if word.bytes().all(|b| b.is_ascii_digit()) => {
                    EditOp::RuleRemoveAt { direction, position: parse_position(word)? }
                }
                (None, words) => EditOp::RuleRemoveMatch { direction, rule: parse_rule(words)? },
            };
            edit(n, op)
        }
        _ => Err(V1Error::usage(format!("unrecognised profile command: {}", words.join(" ")))),
    }
}

/// Reads `inbound|outbound` and pulls a `--at=N` / `--at N` out of the remaining words.
fn direction_and_position<'a>(
    words: &[&'a str],
) -> Result<(Direction, Option<usize>, Vec<&'a str>), V1Error> {
    let direction = match words.first() {
        Some(&"inbound") => Direction::Inbound,
        Some(&"outbound") => Direction::Outbound,
        Some(other) => {
            return Err(V1Error::usage(format!("expected inbound or outbound, found {other:?}")))
        }
        None => return Err(V1Error::usage("expected inbound or outbound")),
    };
    let mut position = None;
    let mut rest = Vec::new();
    let mut iter = words[1..].iter();
    while let Some(word) = iter.next() {
        let value = if let Some(value) = word.strip_prefix("--at=") {
            value
        } else if *word == "--at" {
            iter.next().copied().ok_or_else(|| V1Error::usage("--at needs a position"))?
        } else {
            rest.push(*word);
            continue;
        };
        if position.is_some() {
            return Err(V1Error::usage("--at given twice"));
        }
        position = Some(parse_position(value)?);
    }
    Ok((direction, position, rest))
}

fn parse_position(word: &str) -> Result<usize, V1Error> {
    word.parse::<usize>().map_err(|_| {
        V1Error::invalid("position", format!("{word:?} is not a rule position (1, 2, ...)"))
    })
}

/// A cursor over a rule's words.
struct Words<'a, 'w> {
    words: &'w [&'a str],
    next: usize,
}

impl<'a> Words<'a, '_> {
    fn peek(&self) -> Option<&'a str> {
        self.words.get(self.next).copied()
    }

    fn take(&mut self) -> Option<&'a str> {
        let word = self.peek();
        self.next += usize::from(word.is_some());
        word
    }

    fn value(&mut self, keyword: &str) -> Result<&'a str, V1Error> {
        self.take().ok_or_else(|| V1Error::usage(format!("{keyword} needs a value")))
    }
}

/// Parses `(allow|deny) [protocol …] [from …] [to …]` into a v1 rule.
pub(crate) fn parse_rule(words: &[&str]) -> Result<V1Rule, V1Error> {
    let mut words = Words { words, next: 0 };
    let action = match words.take() {
        Some("allow") => V1Action::Allow,
        Some("deny") => V1Action::Deny,
        Some(other) => {
            return Err(V1Error::usage(format!(
                "a rule starts with allow or deny, found {other:?}"
            )))
        }
        None => return Err(V1Error::usage("a rule needs allow or deny")),
    };
    let mut rule = V1Rule::new(action);
    let protocol = match words.peek() {
        Some("tcp") => Some(Protocol::Tcp),
        Some("udp") => Some(Protocol::Udp),
        Some("icmp") => Some(Protocol::Icmp),
        Some("icmpv6") => Some(Protocol::IcmpV6),
        _ => None,
    };
    if let Some(protocol) = protocol {
        words.take();
        rule.protocol = Some(V1Protocol(protocol));
        if !protocol.supports_ports() && words.peek() == Some("type") {
            words.take();
            rule.icmp_type = Some(icmp_number("icmp type", words.value("type")?, 254)?);
            if words.peek() == Some("code") {
                words.take();
                rule.icmp_code = Some(icmp_number("icmp code", words.value("code")?, 255)?);
            }
        }
    }
    for (end, keyword) in [(End::Src, "from"), (End::Dst, "to")] {
        if words.peek() == Some(keyword) {
            words.take();
            parse_clause(&mut words, &mut rule, end, keyword, protocol)?;
        }
    }
    if let Some(extra) = words.peek() {
        let hint = match extra {
            "type" | "code" => " (ICMP type and code need icmp or icmpv6)",
            "from" => " (from comes before to)",
            _ => "",
        };
        return Err(V1Error::usage(format!("unexpected {extra:?} in rule{hint}")));
    }
    Ok(rule)
}

/// One `from …` or `to …` clause: `ports`, `tag` and `cidr`, each at most once.
fn parse_clause(
    words: &mut Words<'_, '_>,
    rule: &mut V1Rule,
    end: End,
    keyword: &str,
    protocol: Option<Protocol>,
) -> Result<(), V1Error> {
    let (mut ports, mut tag, mut cidr) = (false, false, false);
    let once = |seen: &mut bool, what: &str| {
        if std::mem::replace(seen, true) {
            Err(V1Error::usage(format!("{keyword} {what} given twice")))
        } else {
            Ok(())
        }
    };
    while let Some(word) = words.peek() {
        match word {
            "ports" => {
                words.take();
                once(&mut ports, "ports")?;
                let field = format!("{keyword} ports");
                if !protocol.is_some_and(Protocol::supports_ports) {
                    return Err(V1Error::invalid(field, "ports need protocol tcp or udp"));
                }
                rule.set_ports(end, parse_ports(&field, words.value("ports")?)?);
            }
            "tag" => {
                words.take();
                once(&mut tag, "tag")?;
                let value = words.value("tag")?;
                check_tag(&format!("{keyword} tag"), value)?;
                rule.set_tag(end, value.to_owned());
            }
            "cidr" => {
                words.take();
                once(&mut cidr, "cidr")?;
                let value = words.value("cidr")?;
                rule.set_net(end, normalize_net(&format!("{keyword} cidr"), value)?);
            }
            // calicoctl 0.x took the CIDR without a keyword.
            other
                if other.contains(['.', ':'])
                    && other.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) =>
            {
                words.take();
                once(&mut cidr, "cidr")?;
                rule.set_net(end, normalize_net(&format!("{keyword} cidr"), other)?);
            }
            _ => break,
        }
    }
    Ok(())
}

fn icmp_number(field: &str, word: &str, max: u8) -> Result<u8, V1Error> {
    word.parse::<u8>()
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| V1Error::invalid(field, format!("{word:?} is not a number from 0 to {max}")))
}

/// Parses calicoctl's port list: `80`, `80,443`, `8000:8080` (or `8000-8080`). Every port must
/// be 1-65535 and every range ascending; `field` names the list in errors.
pub fn parse_ports(field: &str, text: &str) -> Result<Vec<Port>, V1Error> {
    let number = |part: &str| -> Result<u16, V1Error> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(V1Error::invalid(
                field,
                format!("{text:?} is not a list of ports and port ranges (like 80,443,8000:8080)"),
            ));
        }
        match part.parse::<u32>() {
            Ok(n @ 1..=65535) => Ok(n as u16),
            _ => {
                Err(V1Error::invalid(field, format!("port {part} out of range: ports are 1-65535")))
            }
        }
    };
    text.split(',')
        .map(|part| match part.split_once([':', '-']) {
            Some((first, last)) => {
                let (first, last) = (number(first)?, number(last)?);
                if first > last {
                    return Err(V1Error::invalid(
                        field,
                        format!("port range {first}:{last} is backwards: the first port must not exceed the last"),
                    ));
                }
                Ok(Port::range(first, last))
            }
            None => number(part).map(Port::Single),
        })
        .collect()
}
