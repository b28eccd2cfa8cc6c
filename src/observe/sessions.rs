//! Sessions as ONTAP's `GET /protocols/san/iscsi/sessions` shapes them: one
//! record per session, connections nested, ONTAP's names (`initiator.name`,
//! `isid` as `61:62:63:64:65:00`, `connections[].initiator_address.address`,
//! `connections[].interface.ip.address`, ...), with isctl's additions (`target`,
//! the negotiated parameters, LIO's session id and state) under names of the same
//! style. [`SCHEMA`] lists every field for the query language.

use serde_json::{json, Map, Value};

use crate::observe::query::Schema;
use crate::state::Session;

/// Every leaf field a session record can have, in display order.
pub const FIELDS: &[&str] = &[
    "target",
    "target_portal_group",
    "target_portal_group_tag",
    "tsih",
    "isid",
    "initiator.name",
    "initiator.alias",
    "initiator.comment",
    "igroups.name",
    "type",
    "state",
    "lio_session_id",
    "admitted_by",
    "parameters.max_connections",
    "parameters.initial_r2t",
    "parameters.immediate_data",
    "parameters.max_burst_length",
    "parameters.first_burst_length",
    "connections.cid",
    "connections.state",
    "connections.authentication_type",
    "connections.initiator_address.address",
    "connections.initiator_address.port",
    "connections.interface.ip.address",
    "connections.interface.ip.port",
    "connections.transport",
    "connections.header_digest",
    "connections.data_digest",
    "connections.max_recv_data_segment_length",
];

/// ONTAP returns a session's keys when no `fields` are asked for (its keys are
/// `svm`, `target_portal_group`, `tsih`; here the target stands for the SVM).
pub const KEYS: &[&str] = &["target", "target_portal_group", "tsih"];

pub const SCHEMA: Schema = Schema {
    fields: FIELDS,
    keys: KEYS,
};

/// The columns `isctl sessions` prints without `--fields`.
pub const TABLE_FIELDS: &[&str] = &[
    "target",
    "target_portal_group_tag",
    "initiator.name",
    "isid",
    "tsih",
    "connections.initiator_address.address",
    "connections.authentication_type",
];

/// `804c37c50000` → `80:4c:37:c5:00:00`.
pub fn isid_colons(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// Split `ip:port` / `[v6]:port` into the address and the port.
fn split_socket(s: &str) -> (String, Option<u16>) {
    match s.parse::<std::net::SocketAddr>() {
        Ok(a) => (a.ip().to_string(), Some(a.port())),
        Err(_) => (s.to_string(), None),
    }
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.into(), v);
    }
}

/// One session as an ONTAP record. Fields the backend does not know are absent
/// (not null), so `field=null` finds them.
pub fn record(s: &Session) -> Value {
    let mut r = Map::new();
    if !s.target.is_empty() {
        r.insert("target".into(), json!(s.target));
    }
    put(
        &mut r,
        "target_portal_group",
        s.portal_group.as_ref().map(|p| json!(p)),
    );
    r.insert("target_portal_group_tag".into(), json!(s.tpg));
    put(&mut r, "tsih", s.tsih.map(|t| json!(t)));
    put(
        &mut r,
        "isid",
        s.isid.as_ref().map(|i| json!(isid_colons(i))),
    );
    let mut initiator = Map::new();
    initiator.insert("name".into(), json!(s.initiator));
    put(&mut initiator, "alias", s.alias.as_ref().map(|a| json!(a)));
    put(
        &mut initiator,
        "comment",
        s.initiator_comment.as_ref().map(|c| json!(c)),
    );
    r.insert("initiator".into(), Value::Object(initiator));
    if !s.igroups.is_empty() {
        r.insert(
            "igroups".into(),
            Value::Array(s.igroups.iter().map(|g| json!({ "name": g })).collect()),
        );
    }
    put(
        &mut r,
        "type",
        s.session_type.as_ref().map(|t| json!(t.to_lowercase())),
    );
    put(&mut r, "state", s.state.as_ref().map(|t| json!(t)));
    put(&mut r, "lio_session_id", s.session_id.map(|i| json!(i)));
    r.insert(
        "admitted_by".into(),
        json!(if s.dynamic { "demo_mode" } else { "acl" }),
    );
    if let Some(p) = &s.params {
        r.insert(
            "parameters".into(),
            json!({
                "max_connections": p.max_connections,
                "initial_r2t": p.initial_r2t,
                "immediate_data": p.immediate_data,
                "max_burst_length": p.max_burst_length,
                "first_burst_length": p.first_burst_length,
            }),
        );
    }
    let conns: Vec<Value> = s
        .connections
        .iter()
        .map(|c| {
            let mut m = Map::new();
            m.insert("cid".into(), json!(c.cid));
            if !c.state.is_empty() {
                m.insert("state".into(), json!(c.state));
            }
            put(
                &mut m,
                "authentication_type",
                c.authentication.as_ref().map(|a| json!(a)),
            );
            let mut ia = Map::new();
            if !c.address.is_empty() {
                ia.insert("address".into(), json!(c.address));
            }
            put(&mut ia, "port", c.port.map(|p| json!(p)));
            m.insert("initiator_address".into(), Value::Object(ia));
            if let Some(local) = &c.local_address {
                let (address, port) = split_socket(local);
                let mut ip = Map::new();
                ip.insert("address".into(), json!(address));
                put(&mut ip, "port", port.map(|p| json!(p)));
                m.insert("interface".into(), json!({ "ip": ip }));
            }
            if !c.transport.is_empty() {
                m.insert("transport".into(), json!(c.transport));
            }
            put(&mut m, "header_digest", c.header_digest.map(|d| json!(d)));
            put(&mut m, "data_digest", c.data_digest.map(|d| json!(d)));
            put(
                &mut m,
                "max_recv_data_segment_length",
                c.max_recv_data_segment_length.map(|d| json!(d)),
            );
            Value::Object(m)
        })
        .collect();
    r.insert("connections".into(), Value::Array(conns));
    Value::Object(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::query::{leaf_values, Query};
    use crate::state::{Connection, SessionParameters};

    fn engine_session() -> Session {
        Session {
            target: "iqn.2026-11.io.isctl:demo".into(),
            tpg: 1,
            initiator: "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test".into(),
            alias: Some("qemu".into()),
            isid: Some("616263646500".into()),
            tsih: Some(4),
            session_id: Some(4),
            state: Some("LOGGED_IN".into()),
            session_type: Some("Normal".into()),
            portal_group: Some("local".into()),
            igroups: vec!["hosts".into()],
            initiator_comment: Some("lab hosts".into()),
            params: Some(SessionParameters {
                max_connections: 1,
                initial_r2t: true,
                immediate_data: true,
                max_burst_length: 262144,
                first_burst_length: 65536,
            }),
            connections: vec![Connection {
                cid: 0,
                address: "127.0.0.1".into(),
                port: Some(40000),
                local_address: Some("127.0.0.1:3260".into()),
                authentication: Some("chap".into()),
                header_digest: Some(false),
                data_digest: Some(true),
                state: "LOGGED_IN".into(),
                transport: "TCP".into(),
                max_recv_data_segment_length: Some(262144),
            }],
            ..Session::default()
        }
    }

    #[test]
    fn every_record_field_is_in_the_schema_and_the_record_is_nested_like_ontap() {
        let r = record(&engine_session());
        assert_eq!(r["isid"], "61:62:63:64:65:00");
        assert_eq!(r["initiator"]["comment"], "lab hosts");
        assert_eq!(r["igroups"][0]["name"], "hosts");
        assert_eq!(r["connections"][0]["initiator_address"]["port"], 40000);
        assert_eq!(
            r["connections"][0]["interface"]["ip"]["address"],
            "127.0.0.1"
        );
        assert_eq!(r["connections"][0]["interface"]["ip"]["port"], 3260);
        assert_eq!(r["parameters"]["first_burst_length"], 65536);
        for f in FIELDS {
            assert!(!leaf_values(&r, f).is_empty(), "{f} missing in {r}");
        }
    }

    #[test]
    fn a_query_on_the_record_uses_ontap_names() {
        let q = Query::from_params(
            &SCHEMA,
            [
                ("connections.authentication_type", "chap|mutual_chap"),
                ("fields", "initiator.name,isid"),
            ],
        )
        .unwrap();
        let a = q.run(&SCHEMA, vec![record(&engine_session())]);
        let rec = &a.records.unwrap()[0];
        assert_eq!(rec["isid"], "61:62:63:64:65:00");
        assert_eq!(rec["target_portal_group"], "local");
        assert!(rec.get("connections").is_none());
    }
}
