//! `[global]`, `[portal.*]` and `[initiator_group.*]`: each on its own.

use crate::model::diag::Diags;
use crate::model::names::IscsiName;
use crate::model::net::{check_isns_server, parse_listen, parse_network};
use crate::model::schema::{Fields, Val};
use crate::model::types::{AuthMethod, Global, InitiatorGroup, Origin, PortalGroup};

use super::{auth_method, Basename, Entry};

const MAX_COMMENT: usize = 1024;

/// `[global]` (absent: all defaults).
pub(crate) fn global(e: Option<&Entry<'_, '_>>, d: &mut Diags) -> (Global, Basename) {
    let Some(e) = e else {
        return (Global::default(), Basename::Absent);
    };
    let mut f = Fields::new(e.src, e.table, "global".into(), e.at.clone(), "[global]");
    let mut g = Global {
        origin: Some(e.at.clone()),
        ..Global::default()
    };
    let mut basename = Basename::Absent;
    if let Some(b) = f.string(d, "basename") {
        match IscsiName::parse(&b.v) {
            Ok(_) => basename = Basename::Valid(b.v.clone()),
            Err(err) => {
                d.error(
                    &b.at,
                    &f.object,
                    format!("basename: {}", err.problem),
                    err.fix,
                );
                basename = Basename::Invalid(b.v.clone());
            }
        }
        g.basename = Some(b.v);
    }
    if let Some(list) = f.string_list(d, "isns_servers") {
        for s in list.v {
            match check_isns_server(&s.v) {
                Ok(()) => g.isns_servers.push(s.v),
                Err(err) => d.error(
                    &s.at,
                    &f.object,
                    format!("iSNS server {}", err.problem),
                    err.fix,
                ),
            }
        }
    }
    if let Some(a) = f.bool(d, "alua") {
        g.alua = a.v;
    }
    f.finish(d);
    (g, basename)
}

/// A portal group before tags are assigned and cross-checked.
pub(crate) struct PortalDraft {
    pub pg: PortalGroup,
    /// The tag as written, when given.
    pub tag: Option<Val<u16>>,
    /// Position of each listen address (same order as `pg.listen`).
    pub listen_at: Vec<Origin>,
    /// Position of `discovery_auth_group`'s value, when given.
    pub group_at: Option<Origin>,
    /// Position of `discovery_auth`'s value, when given.
    pub method_at: Option<Origin>,
    /// False when the definition had errors: cross-checks still look at what could be
    /// read (its addresses, its tag), but it stays out of the model.
    pub ok: bool,
}

pub(crate) fn portal(e: &Entry<'_, '_>, d: &mut Diags) -> PortalDraft {
    let mut f = Fields::new(
        e.src,
        e.table,
        format!("portal.{}", e.name),
        e.at.clone(),
        "a portal group",
    );
    let errors_before = d.error_count();
    let mut draft = PortalDraft {
        pg: PortalGroup {
            name: e.name.to_owned(),
            tag: 0,
            listen: Vec::new(),
            discovery_auth: AuthMethod::None,
            discovery_auth_group: None,
            comment: String::new(),
            origin: e.at.clone(),
        },
        tag: None,
        listen_at: Vec::new(),
        group_at: None,
        method_at: None,
        ok: false,
    };
    if let Some(t) = f.integer(d, "tag") {
        match u16::try_from(t.v) {
            Ok(tag) if tag >= 1 => {
                draft.tag = Some(Val {
                    v: tag,
                    at: t.at,
                    key_at: t.key_at,
                })
            }
            _ => d.error(
                &t.at,
                &f.object,
                format!("tag {} is not between 1 and 65535", t.v),
                "use a portal group tag from 1 to 65535, or leave `tag` out to have one assigned",
            ),
        }
    }
    match f.string_list(d, "listen") {
        None if !f.has("listen") => f.missing(
            d,
            "listen",
            "add the addresses to listen on, e.g. listen = [\"[::]:3260\"] (every IPv4 and IPv6 address)",
        ),
        None => {}
        Some(list) => {
            if list.v.is_empty() {
                d.warn(
                    &list.at,
                    &f.object,
                    "`listen` is empty: targets are unreachable through this portal group",
                    "add an address, e.g. listen = [\"[::]:3260\"]",
                );
            }
            for a in list.v {
                match parse_listen(&a.v) {
                    Ok(sa) => {
                        if let Some(i) = draft.pg.listen.iter().position(|x| *x == sa) {
                            d.error(
                                &a.at,
                                &f.object,
                                format!("listen address {sa} is listed twice (also at {})", draft.listen_at[i]),
                                "list each address once",
                            );
                        } else {
                            draft.pg.listen.push(sa);
                            draft.listen_at.push(a.at);
                        }
                    }
                    Err(err) => d.error(&a.at, &f.object, format!("listen address {}", err.problem), err.fix),
                }
            }
        }
    }
    let method = f.string(d, "discovery_auth");
    let group = f.string(d, "discovery_auth_group");
    let mut method_ok = true;
    let explicit = match &method {
        Some(m) => {
            draft.method_at = Some(m.at.clone());
            let r = auth_method(d, &f, "discovery_auth", m);
            method_ok = r.is_some();
            r
        }
        None => None,
    };
    if let Some(g) = &group {
        draft.group_at = Some(g.at.clone());
    }
    match (explicit, &group) {
        (Some(AuthMethod::None), Some(g)) => d.error(
            &g.key_at,
            &f.object,
            format!("discovery_auth = \"none\" but discovery_auth_group = {:?} is set", g.v),
            "remove discovery_auth_group, or set discovery_auth = \"chap\" (or \"mutual-chap\")",
        ),
        (Some(m @ (AuthMethod::Chap | AuthMethod::MutualChap)), None) => d.error(
            draft.method_at.as_ref().unwrap_or(&e.at),
            &f.object,
            format!("discovery_auth = {:?} needs `discovery_auth_group`", m.as_str()),
            "add discovery_auth_group = \"<name of an [auth.*] section>\", or set discovery_auth = \"none\"",
        ),
        (Some(m), g) => {
            draft.pg.discovery_auth = m;
            draft.pg.discovery_auth_group = g.as_ref().map(|g| g.v.clone());
        }
        (None, Some(g)) if method_ok => {
            // Like a target group's auth_method: an auth group alone means CHAP.
            draft.pg.discovery_auth = AuthMethod::Chap;
            draft.pg.discovery_auth_group = Some(g.v.clone());
        }
        (None, _) => {}
    }
    if let Some(c) = f.string(d, "comment") {
        if check_text_multiline(d, &f, &c) {
            draft.pg.comment = c.v;
        }
    }
    f.finish(d);
    draft.ok = d.error_count() == errors_before;
    draft
}

/// Comments may span lines, but stay bounded.
fn check_text_multiline(d: &mut Diags, f: &Fields<'_, '_>, c: &Val<String>) -> bool {
    if c.v.len() > MAX_COMMENT {
        d.error(
            &c.at,
            &f.object,
            format!(
                "`comment` is {} bytes long; the limit is {MAX_COMMENT}",
                c.v.len()
            ),
            "shorten the comment",
        );
        return false;
    }
    true
}

pub(crate) fn initiator_group(e: &Entry<'_, '_>, d: &mut Diags) -> Option<InitiatorGroup> {
    let mut f = Fields::new(
        e.src,
        e.table,
        format!("initiator_group.{}", e.name),
        e.at.clone(),
        "an initiator group",
    );
    let errors_before = d.error_count();
    let mut g = InitiatorGroup {
        name: e.name.to_owned(),
        initiators: Vec::new(),
        networks: Vec::new(),
        comment: String::new(),
        origin: e.at.clone(),
    };
    if let Some(list) = f.string_list(d, "initiators") {
        for s in list.v {
            match IscsiName::parse(&s.v) {
                Ok(n) if g.initiators.contains(&n) => d.warn(
                    &s.at,
                    &f.object,
                    format!("initiator {:?} is listed twice", s.v),
                    "list each initiator once",
                ),
                Ok(n) => g.initiators.push(n),
                Err(err) => d.error(
                    &s.at,
                    &f.object,
                    format!("initiator name: {}", err.problem),
                    err.fix,
                ),
            }
        }
    }
    if let Some(list) = f.string_list(d, "networks") {
        for s in list.v {
            match parse_network(&s.v) {
                Ok((net, host_bits)) => {
                    if host_bits {
                        d.warn(
                            &s.at,
                            &f.object,
                            format!("network {:?} has host bits set; it means {net}", s.v),
                            format!("write {:?}", net.to_string()),
                        );
                    }
                    if g.networks.contains(&net) {
                        d.warn(
                            &s.at,
                            &f.object,
                            format!("network {net} is listed twice"),
                            "list each network once",
                        );
                    } else {
                        g.networks.push(net);
                    }
                }
                Err(err) => d.error(
                    &s.at,
                    &f.object,
                    format!("network {}", err.problem),
                    err.fix,
                ),
            }
        }
    }
    if let Some(c) = f.string(d, "comment") {
        if check_text_multiline(d, &f, &c) {
            g.comment = c.v;
        }
    }
    f.finish(d);
    (d.error_count() == errors_before).then_some(g)
}
