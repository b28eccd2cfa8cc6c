//! `isctl sessions [FIELD=VALUE...] [--fields F,..] [--order-by F] [--max-records N]`:
//! the logged-in iSCSI sessions the backend shows (LIO: ACL `info` and TPG
//! `dynamic_sessions`, docs/configfs.md §6; the engine: its session registry), as
//! a table or JSON, in one shape for both.
//!
//! Filters match a field's value exactly, with `*` as a wildcard; connection fields
//! (`cid`, `address`, `conn_state`) match when any connection matches.

use std::io::Write;

use serde_json::{json, Map, Value};

use crate::cli::args::SessionsArgs;
use crate::cli::exit;
use crate::cli::resolve::Resolved;
use crate::state::Session;

/// Every field, in display order; the connection fields come last.
pub const FIELDS: &[&str] = &[
    "target",
    "tpgt",
    "initiator",
    "alias",
    "isid",
    "tsih",
    "session_id",
    "type",
    "state",
    "admitted_by",
    "cid",
    "conn_state",
    "address",
    "transport",
    "local_address",
    "header_digest",
    "data_digest",
];

const DEFAULT_FIELDS: &[&str] = &[
    "target",
    "tpgt",
    "initiator",
    "isid",
    "tsih",
    "type",
    "state",
    "address",
];

/// The per-connection fields: the tail of [`FIELDS`], from `cid` on.
const CONN_FIELDS: &[&str] = FIELDS.split_at(10).1;

fn opt<T: ToString>(v: &Option<T>) -> Value {
    v.as_ref().map_or(Value::Null, |x| json!(x.to_string()))
}

/// One session as a JSON object (connections nested).
pub fn session_json(s: &Session) -> Value {
    json!({
        "target": s.target,
        "tpgt": s.tpg,
        "initiator": s.initiator,
        "alias": opt(&s.alias),
        "isid": s.isid.as_ref().map(|i| format!("0x{i}")),
        "tsih": s.tsih,
        "session_id": s.session_id,
        "type": opt(&s.session_type),
        "state": opt(&s.state),
        "admitted_by": if s.dynamic { "demo_mode" } else { "acl" },
        "connections": s.connections.iter().map(|c| json!({
            "cid": c.cid,
            "conn_state": c.state,
            "address": c.address,
            "transport": c.transport,
            "local_address": c.local_address,
            "header_digest": c.header_digest,
            "data_digest": c.data_digest,
        })).collect::<Vec<_>>(),
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The values of `field` in a session object (several for connection fields).
fn values(row: &Value, field: &str) -> Vec<String> {
    if CONN_FIELDS.contains(&field) {
        row["connections"]
            .as_array()
            .map(|cs| cs.iter().map(|c| text(&c[field])).collect())
            .unwrap_or_default()
    } else {
        vec![text(&row[field])]
    }
}

/// `*` wildcard match.
fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let mut rest = s;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

fn check_field(f: &str) -> anyhow::Result<()> {
    if FIELDS.contains(&f) {
        Ok(())
    } else {
        anyhow::bail!(
            "unknown session field {f:?}; fields are: {}",
            FIELDS.join(", ")
        )
    }
}

pub fn run(r: &Resolved, args: &SessionsArgs) -> anyhow::Result<u8> {
    r.text_or_json("sessions")?;
    let mut filters = Vec::new();
    for f in &args.filters {
        let Some((k, v)) = f.split_once('=') else {
            eprintln!("error: filter {f:?} is not FIELD=VALUE");
            return Ok(exit::USAGE);
        };
        check_field(k)?;
        filters.push((k.to_string(), v.to_string()));
    }
    let fields: Vec<String> = if args.fields.is_empty() {
        DEFAULT_FIELDS.iter().map(|s| s.to_string()).collect()
    } else {
        for f in &args.fields {
            check_field(f)?;
        }
        args.fields.clone()
    };
    if let Some(o) = &args.order_by {
        check_field(o)?;
    }
    let all: Vec<Value> = r.host()?.sessions()?.iter().map(session_json).collect();
    let mut rows: Vec<Value> = all
        .into_iter()
        .filter(|row| {
            filters
                .iter()
                .all(|(k, v)| values(row, k).iter().any(|x| glob(v, x)))
        })
        .collect();
    if let Some(o) = &args.order_by {
        rows.sort_by(|a, b| {
            let (x, y) = (values(a, o).join(","), values(b, o).join(","));
            match (x.parse::<u64>(), y.parse::<u64>()) {
                (Ok(m), Ok(n)) => m.cmp(&n),
                _ => x.cmp(&y),
            }
        });
    }
    if let Some(n) = args.max_records {
        rows.truncate(n);
    }
    let mut out = std::io::stdout().lock();
    if r.json() {
        let picked: Vec<Value> = rows
            .iter()
            .map(|r| {
                if args.fields.is_empty() {
                    return r.clone();
                }
                let mut m = Map::new();
                let mut conn_keys = Vec::new();
                for f in &fields {
                    if CONN_FIELDS.contains(&f.as_str()) {
                        conn_keys.push(f.clone());
                    } else {
                        m.insert(f.clone(), r[f.as_str()].clone());
                    }
                }
                if !conn_keys.is_empty() {
                    let cs: Vec<Value> = r["connections"]
                        .as_array()
                        .map(|cs| {
                            cs.iter()
                                .map(|c| {
                                    Value::Object(
                                        conn_keys
                                            .iter()
                                            .map(|k| (k.clone(), c[k.as_str()].clone()))
                                            .collect(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    m.insert("connections".into(), Value::Array(cs));
                }
                Value::Object(m)
            })
            .collect();
        serde_json::to_writer_pretty(
            &mut out,
            &json!({ "sessions": picked, "count": picked.len() }),
        )?;
        writeln!(out)?;
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        writeln!(out, "No sessions.")?;
        return Ok(exit::OK);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| fields.iter().map(|f| values(r, f).join(",")).collect())
        .collect();
    let widths: Vec<usize> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            table
                .iter()
                .map(|r| r[i].len())
                .chain([f.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(
        out,
        "{}",
        line(fields.iter().map(|f| f.to_uppercase()).collect())
    )?;
    for r in table {
        writeln!(out, "{}", line(r))?;
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_fields_are_the_tail_of_the_field_list() {
        assert_eq!(CONN_FIELDS[0], "cid");
        assert_eq!(CONN_FIELDS.last(), FIELDS.last());
    }

    #[test]
    fn globs() {
        assert!(glob("iqn.*:client1", "iqn.1994-05.com.example:client1"));
        assert!(glob("*", "x"));
        assert!(glob("abc", "abc"));
        assert!(!glob("abc", "abcd"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c*e", "abcdf"));
    }
}
