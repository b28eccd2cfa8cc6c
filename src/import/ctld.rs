//! FreeBSD ctld's `ctl.conf` (classic syntax, ctl.conf(5)) → a [`Model`].
//!
//! Statements are a keyword and its arguments on one line, or a keyword, arguments and
//! a `{ ... }` block; `#` starts a comment; arguments may be `"quoted"`. Read:
//!
//! * `auth-group NAME { chap U S | chap-mutual U S MU MS | initiator-name N |
//!   initiator-portal A[/P] | auth-type T }`, and the same keys directly in a target
//!   (an anonymous auth group). ctld's predefined groups: `no-authentication` (anyone,
//!   no CHAP) and `default` (what a target or a portal group without auth settings
//!   gets: it denies every login, resp. discovery).
//! * `portal-group NAME { listen A | discovery-auth-group G | tag N | ... }`; the
//!   predefined `default` listens on `0.0.0.0:3260` and `[::]:3260` (the model's
//!   `[::]:3260`). Tags are ctld's: `default` 1, then 2, 3, ... in order of definition,
//!   unless `tag N`.
//! * `target NAME { alias | auth-group | portal-group PG [AG] | lun N { ... } |
//!   lun N NAME | ... }` and global `lun NAME { ... }` (a LUN shared by name).
//! * In a LUN: `path`, `size` (bytes, or with a `k`/`m`/`g`/`t`/`p`/`e` suffix, powers
//!   of 1024 as expand_number(3) reads them), `blocksize`, `serial`, `backend`
//!   (`block`: paths under `/dev/` are block extents, others file extents; `ramdisk`),
//!   `option readonly on`, `option rpm 1` (non-rotating), `option writecache off`,
//!   `option naa 0x...`.
//!
//! ctld admits a login when the initiator's name matches one of the group's
//! `initiator-name`s (if any) **and** its address one of its `initiator-portal`s (if
//! any): the model's initiator group means the same. CTL's write cache is on unless
//! `option writecache off`: `write_back = true`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{object_name, origin, portal, secret_problem, serial_problem, unique, Report};
use super::{syntax, ImportError, Imported};
use crate::model::net::{parse_listen, parse_network};
use crate::model::{
    limits, AuthMethod, Backing, ChapCredentials, Extent, InitiatorGroup, IscsiName, Model,
    PeerCredentials, Rpm, Secret, Target, TargetGroup,
};

#[derive(Debug, Clone)]
struct Stmt {
    words: Vec<String>,
    line: u32,
    body: Option<Vec<Stmt>>,
}

/// Import the ctld configuration at `path`.
pub fn import(path: &Path) -> Result<Imported, ImportError> {
    let text = super::read(path, "ctld configuration file (ctl.conf)")?;
    import_str(path, &text)
}

/// Import ctld configuration text; `file` names it in findings.
pub fn import_str(file: &Path, text: &str) -> Result<Imported, ImportError> {
    let toks = tokenize(file, text)?;
    let mut pos = 0;
    let stmts = parse_block(file, &toks, &mut pos, false)?;
    Ok(Conv::new(file).run(&stmts))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Newline,
}

fn tokenize(file: &Path, text: &str) -> Result<Vec<(Tok, u32)>, ImportError> {
    let mut out = Vec::new();
    let mut line = 1u32;
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                chars.next();
                out.push((Tok::Newline, line));
                line += 1;
            }
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '{' => {
                chars.next();
                out.push((Tok::Open, line));
            }
            '}' => {
                chars.next();
                out.push((Tok::Close, line));
            }
            ';' => {
                chars.next();
                out.push((Tok::Newline, line));
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '"' => {
                chars.next();
                let start = line;
                let mut w = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\n') | None => {
                            return Err(syntax(
                                format!("{}:{start}", file.display()),
                                "a quoted string is not closed on its line",
                                "add the closing `\"`",
                            ))
                        }
                        Some(c) => w.push(c),
                    }
                }
                out.push((Tok::Word(w), line));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '{' | '}' | '#' | '"' | ';') {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                out.push((Tok::Word(w), line));
            }
        }
    }
    Ok(out)
}

fn parse_block(
    file: &Path,
    toks: &[(Tok, u32)],
    pos: &mut usize,
    nested: bool,
) -> Result<Vec<Stmt>, ImportError> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut line = 0;
    while *pos < toks.len() {
        let (t, l) = &toks[*pos];
        *pos += 1;
        match t {
            Tok::Word(w) => {
                if words.is_empty() {
                    line = *l;
                }
                words.push(w.clone());
            }
            Tok::Newline => {
                if !words.is_empty() {
                    out.push(Stmt {
                        words: std::mem::take(&mut words),
                        line,
                        body: None,
                    });
                }
            }
            Tok::Open => {
                if words.is_empty() {
                    return Err(syntax(
                        format!("{}:{l}", file.display()),
                        "`{` without a keyword before it",
                        "write `target NAME {`, `lun 0 {`, ...",
                    ));
                }
                let body = parse_block(file, toks, pos, true)?;
                out.push(Stmt {
                    words: std::mem::take(&mut words),
                    line,
                    body: Some(body),
                });
            }
            Tok::Close => {
                if !words.is_empty() {
                    out.push(Stmt {
                        words: std::mem::take(&mut words),
                        line,
                        body: None,
                    });
                }
                if !nested {
                    return Err(syntax(
                        format!("{}:{l}", file.display()),
                        "`}` closes no block",
                        "remove it, or open the block it closes",
                    ));
                }
                return Ok(out);
            }
        }
    }
    if nested {
        return Err(syntax(
            format!("{}:{}", file.display(), toks.last().map_or(1, |t| t.1)),
            "a `{` block is not closed at the end of the file",
            "add the missing `}`",
        ));
    }
    if !words.is_empty() {
        out.push(Stmt {
            words,
            line,
            body: None,
        });
    }
    Ok(out)
}

/// `chap U S` or `chap-mutual U S MU MS`: (user, secret, mutual (user, secret), line).
type Chap = (String, String, Option<(String, String)>, u32);

/// An auth group as written.
#[derive(Debug, Clone, Default)]
struct AuthGroup {
    /// (user, secret, mutual (user, secret)), with the line.
    chaps: Vec<Chap>,
    names: Vec<(String, u32)>,
    portals: Vec<(String, u32)>,
    auth_type: Option<(String, u32)>,
    line: u32,
}

/// What an auth group becomes in a target's group.
#[derive(Debug, Clone, Default)]
struct Access {
    auth: Option<String>,
    method: AuthMethod,
    initiator_group: Option<String>,
}

struct Conv<'a> {
    file: &'a Path,
    m: Model,
    r: Report,
    auth_groups: BTreeMap<String, AuthGroup>,
    /// auth-group name → what it became (created once).
    access: BTreeMap<String, Option<Access>>,
    /// portal-group name → (tag, listen, discovery statement).
    portal_defs: Vec<(String, Stmt)>,
    named_luns: BTreeMap<String, Stmt>,
    /// extent by path: (extent name, first target).
    paths: BTreeMap<String, (String, String)>,
    /// named LUN → extent name.
    named_extents: BTreeMap<String, String>,
}

fn arg(s: &Stmt, i: usize) -> Option<&str> {
    s.words.get(i).map(String::as_str)
}

/// expand_number(3): digits with an optional k, m, g, t, p or e (any case; powers of
/// 1024) and an optional trailing b.
fn expand_number(s: &str) -> Option<u64> {
    let t = s.strip_suffix(['b', 'B']).unwrap_or(s);
    let (num, shift) = match t.chars().last()? {
        c if c.is_ascii_digit() => (t, 0),
        c => {
            let shift = match c.to_ascii_lowercase() {
                'k' => 10,
                'm' => 20,
                'g' => 30,
                't' => 40,
                'p' => 50,
                'e' => 60,
                _ => return None,
            };
            (&t[..t.len() - 1], shift)
        }
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

impl<'a> Conv<'a> {
    fn new(file: &'a Path) -> Self {
        Conv {
            file,
            m: Model::default(),
            r: Report::default(),
            auth_groups: BTreeMap::new(),
            access: BTreeMap::new(),
            portal_defs: Vec::new(),
            named_luns: BTreeMap::new(),
            paths: BTreeMap::new(),
            named_extents: BTreeMap::new(),
        }
    }

    fn at(&self, line: u32) -> String {
        format!("{}:{line}", self.file.display())
    }

    fn problem(&mut self, line: u32, object: &str, p: impl Into<String>) {
        let at = self.at(line);
        self.r.problem(&at, object, p);
    }

    fn run(mut self, stmts: &[Stmt]) -> Imported {
        // First pass: definitions referred to by name.
        for s in stmts {
            let kw = s.words[0].as_str();
            match (kw, &s.body) {
                ("auth-group", Some(body)) => {
                    let name = arg(s, 1).unwrap_or_default().to_string();
                    let ag = self.auth_group(body, &format!("auth-group {name:?}"), s.line);
                    self.auth_groups.insert(name, ag);
                }
                ("portal-group", Some(_)) => {
                    let name = arg(s, 1).unwrap_or_default().to_string();
                    if let Some(i) = self.portal_defs.iter().position(|(n, _)| *n == name) {
                        self.portal_defs[i].1 = s.clone();
                    } else {
                        self.portal_defs.push((name, s.clone()));
                    }
                }
                ("lun", Some(_)) => {
                    self.named_luns
                        .insert(arg(s, 1).unwrap_or_default().to_string(), s.clone());
                }
                ("target", Some(_)) => {}
                ("pidfile" | "debug", None) => {}
                ("isns-server", None) => {
                    if let Some(v) = arg(s, 1) {
                        self.m.global.isns_servers.push(v.to_string());
                    }
                }
                (k, _) => {
                    let line = s.line;
                    self.problem(
                        line,
                        "global",
                        format!(
                            "`{}`: {}",
                            s.words.join(" "),
                            match k {
                                "maxproc" | "timeout" | "isns-period" | "isns-timeout" =>
                                    "the model has no daemon settings",
                                _ => "not a ctl.conf setting the model knows; not imported",
                            }
                        ),
                    );
                }
            }
        }
        // Portal groups: `default` is tag 1 and exists before any definition.
        let mut tags: BTreeMap<String, (u16, u32)> = BTreeMap::new();
        let mut next: u16 = 1;
        tags.insert("default".into(), (1, 0));
        for (name, s) in &self.portal_defs.clone() {
            let explicit = s
                .body
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|b| b.words[0] == "tag")
                .and_then(|b| arg(b, 1)?.parse::<u16>().ok().filter(|t| *t > 0));
            let tag = match explicit {
                Some(t) => t,
                None if name == "default" => 1,
                None => {
                    next += 1;
                    next
                }
            };
            tags.insert(name.clone(), (tag, s.line));
        }
        let targets: Vec<&Stmt> = stmts
            .iter()
            .filter(|s| s.words[0] == "target" && s.body.is_some())
            .collect();
        // Which portal groups targets use (default when a target names none).
        let mut used: Vec<String> = Vec::new();
        for t in &targets {
            let pgs: Vec<String> = t
                .body
                .as_deref()
                .unwrap_or_default()
                .iter()
                .filter(|b| b.words[0] == "portal-group")
                .filter_map(|b| arg(b, 1).map(str::to_string))
                .collect();
            if pgs.is_empty() || pgs.iter().any(|p| p == "default") {
                used.push("default".into());
                // The predefined portal group is written nowhere: findings about it
                // point at the first target using it.
                if let Some(d) = tags.get_mut("default").filter(|d| d.1 == 0) {
                    d.1 = t.line;
                }
            }
            used.extend(pgs);
        }
        for (name, _) in &self.portal_defs {
            used.push(name.clone());
        }
        used.sort();
        used.dedup();
        for name in &used {
            let Some(&(tag, line)) = tags.get(name) else {
                continue;
            };
            self.portal_group(name, tag, line);
        }
        self.check_overlaps();
        for t in targets {
            self.target(t);
        }
        let (problems, notes) = self.r.sorted();
        Imported {
            model: self.m,
            problems,
            notes,
        }
    }

    fn auth_group(&mut self, body: &[Stmt], object: &str, line: u32) -> AuthGroup {
        let mut ag = AuthGroup {
            line,
            ..AuthGroup::default()
        };
        for s in body {
            self.auth_stmt(&mut ag, s, object);
        }
        ag
    }

    /// An auth statement into `ag`; false when `s` is not one.
    fn auth_stmt(&mut self, ag: &mut AuthGroup, s: &Stmt, object: &str) -> bool {
        let w = |i: usize| arg(s, i).unwrap_or_default().to_string();
        match s.words[0].as_str() {
            "chap" if s.words.len() == 3 => ag.chaps.push((w(1), w(2), None, s.line)),
            "chap-mutual" if s.words.len() == 5 => {
                ag.chaps.push((w(1), w(2), Some((w(3), w(4))), s.line))
            }
            "initiator-name" if s.words.len() == 2 => ag.names.push((w(1), s.line)),
            "initiator-portal" if s.words.len() == 2 => ag.portals.push((w(1), s.line)),
            "auth-type" if s.words.len() == 2 => ag.auth_type = Some((w(1), s.line)),
            "chap" | "chap-mutual" | "initiator-name" | "initiator-portal" | "auth-type" => self
                .problem(
                    s.line,
                    object,
                    format!(
                        "`{}` has the wrong number of arguments; not imported",
                        s.words.join(" ")
                    ),
                ),
            _ => return false,
        }
        true
    }

    /// The model objects for auth group `name` (`ag`), created once; `None` when it
    /// denies (reported).
    fn access_for(
        &mut self,
        key: &str,
        name: &str,
        ag: &AuthGroup,
        object: &str,
    ) -> Option<Access> {
        if let Some(a) = self.access.get(key) {
            return a.clone();
        }
        let a = self.make_access(name, ag, object);
        self.access.insert(key.to_string(), a.clone());
        a
    }

    fn make_access(&mut self, name: &str, ag: &AuthGroup, object: &str) -> Option<Access> {
        let mut acc = Access::default();
        let ty = ag.auth_type.as_ref().map(|(t, _)| t.as_str());
        let has_mutual = ag.chaps.iter().any(|c| c.2.is_some());
        let has_plain = ag.chaps.iter().any(|c| c.2.is_none());
        if has_mutual && has_plain {
            self.problem(ag.line, object, "mixes chap and chap-mutual, which ctld refuses; only the first credential is imported");
        }
        match ty {
            Some("deny") => {
                self.problem(ag.auth_type.as_ref().map_or(ag.line, |t| t.1), object, "auth-type deny: the model cannot deny every login; imported without CHAP: remove the target from the model if nobody may log in");
                return None;
            }
            Some("none") | Some("chap") | Some("chap-mutual") | None => {}
            Some(other) => self.problem(
                ag.auth_type.as_ref().map_or(ag.line, |t| t.1),
                object,
                format!("auth-type {other:?} is not a ctld type; ignored"),
            ),
        }
        if ty != Some("none") {
            if let Some((user, secret, mutual, line)) = ag.chaps.first().cloned() {
                if ag.chaps.len() > 1 {
                    self.problem(ag.chaps[1].3, object, format!("{} CHAP credentials: ctld accepts any of them, the model one per group: only {user:?} is imported", ag.chaps.len()));
                }
                if let Some(p) = secret_problem(&secret) {
                    self.problem(line, object, format!("CHAP user {user:?}: {p}"));
                }
                let peer = mutual.map(|(mu, ms)| {
                    if let Some(p) = secret_problem(&ms) {
                        self.problem(line, object, format!("mutual CHAP user {mu:?}: {p}"));
                    }
                    if ms == secret {
                        self.problem(line, object, "the mutual secret equals the secret; the model requires them to differ (RFC 7143 12.1.3)");
                    }
                    PeerCredentials { user: mu, secret: Secret::new(ms) }
                });
                if ty == Some("chap") && peer.is_some() {
                    acc.method = AuthMethod::Chap;
                } else {
                    acc.method = if peer.is_some() {
                        AuthMethod::MutualChap
                    } else {
                        AuthMethod::Chap
                    };
                }
                if ty == Some("chap-mutual") && peer.is_none() {
                    self.problem(
                        line,
                        object,
                        "auth-type chap-mutual without chap-mutual credentials; imported as chap",
                    );
                }
                let an = unique(&self.m.auths, &object_name(name));
                self.m.auths.insert(
                    an.clone(),
                    ChapCredentials {
                        name: an.clone(),
                        user,
                        secret: Secret::new(secret),
                        peer,
                        origin: origin(self.file, line),
                    },
                );
                acc.auth = Some(an);
            } else if matches!(ty, Some("chap") | Some("chap-mutual")) {
                self.problem(ag.line, object, "auth-type chap without credentials denies every login; the model cannot deny: imported without CHAP");
            }
        }
        if ag.chaps.is_empty() && ag.names.is_empty() && ag.portals.is_empty() && ty.is_none() {
            self.problem(ag.line, object, "an empty auth group denies every login in ctld; the model cannot deny: imported open");
            return None;
        }
        if !ag.names.is_empty() || !ag.portals.is_empty() {
            let mut initiators = Vec::new();
            for (n, line) in &ag.names {
                let low = n.to_ascii_lowercase();
                match IscsiName::parse(&low) {
                    Ok(i) if !initiators.contains(&i) => initiators.push(i),
                    Ok(_) => {}
                    Err(e) => self.problem(
                        *line,
                        object,
                        format!("initiator-name: {}; not imported", e.problem),
                    ),
                }
            }
            let mut networks = Vec::new();
            for (p, line) in &ag.portals {
                let p = p.replace(['[', ']'], "");
                match parse_network(&p) {
                    Ok((n, _)) if !networks.contains(&n) => networks.push(n),
                    Ok(_) => {}
                    Err(e) => self.problem(
                        *line,
                        object,
                        format!("initiator-portal: {}; not imported", e.problem),
                    ),
                }
            }
            let gn = unique(&self.m.initiator_groups, &object_name(name));
            self.m.initiator_groups.insert(
                gn.clone(),
                InitiatorGroup {
                    name: gn.clone(),
                    initiators,
                    networks,
                    comment: String::new(),
                    origin: origin(self.file, ag.line),
                },
            );
            acc.initiator_group = Some(gn);
        }
        Some(acc)
    }

    /// Access through the auth group called `name` (predefined or defined).
    fn named_access(
        &mut self,
        name: &str,
        line: u32,
        object: &str,
        deny_what: &str,
    ) -> Option<Access> {
        // ctl.conf may define `default` (and `no-authentication`) once itself: that
        // definition replaces ctld's predefined group.
        if let Some(ag) = self.auth_groups.get(name).cloned() {
            return self.access_for(name, name, &ag, &format!("auth-group {name:?}"));
        }
        match name {
            "no-authentication" => Some(Access::default()),
            "default" => {
                self.problem(line, object, format!("ctld's predefined auth-group `default` denies every {deny_what}; the model cannot deny: imported open to anyone (add an initiator group or auth)"));
                None
            }
            n => {
                match self.auth_groups.get(n).cloned() {
                    Some(ag) => self.access_for(n, n, &ag, &format!("auth-group {n:?}")),
                    None => {
                        self.problem(line, object, format!("auth-group {n:?} is not defined (ctld refuses this); imported open"));
                        None
                    }
                }
            }
        }
    }

    fn portal_group(&mut self, name: &str, tag: u16, line: u32) {
        let object = format!("portal-group {name:?}");
        let def = self
            .portal_defs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone());
        let mut listen: Vec<SocketAddr> = Vec::new();
        let mut discovery: Option<(String, u32)> = None;
        match &def {
            None => listen.push(SocketAddr::from(([0u16; 8], 3260))),
            Some(s) => {
                for b in s.body.as_deref().unwrap_or_default() {
                    let v = arg(b, 1).unwrap_or_default().to_string();
                    match b.words[0].as_str() {
                        "listen" => match parse_listen(&v) {
                            Ok(a) => listen.push(a),
                            Err(e) => self.problem(b.line, &object, format!("listen {v:?}: {} (ctld resolves host names; the model listens on addresses); not imported", e.problem)),
                        },
                        "discovery-auth-group" => discovery = Some((v, b.line)),
                        "tag" => {}
                        "discovery-filter" if v == "none" => {}
                        k => self.problem(
                            b.line,
                            &object,
                            format!(
                                "`{}`: {}",
                                b.words.join(" "),
                                match k {
                                    "listen-iser" => "the model has no iSER (iSCSI over RDMA)",
                                    "discovery-filter" => "the model has no discovery filter: discovery lists every target of the portal group",
                                    "redirect" => "the model has no login redirection",
                                    "offload" => "the model has no offload drivers",
                                    "foreign" => "the model has no foreign portal groups",
                                    "option" | "dscp" | "pcp" => "the model has no portal options",
                                    _ => "not a portal-group setting the model knows; not imported",
                                }
                            ),
                        ),
                    }
                }
            }
        }
        // ctld binds 0.0.0.0:P and [::]:P as two sockets; in the model "[::]:P" is
        // both.
        let v6_wild: Vec<u16> = listen
            .iter()
            .filter(|a| a.is_ipv6() && a.ip().is_unspecified())
            .map(|a| a.port())
            .collect();
        listen.retain(|a| {
            let dup = a.is_ipv4() && a.ip().is_unspecified() && v6_wild.contains(&a.port());
            if dup {
                self.r.note(
                    &format!("{}:{line}", self.file.display()),
                    &object,
                    format!("listen {a} and [::]:{} are one dual-stack portal in the model: written as [::]:{}", a.port(), a.port()),
                );
            }
            !dup
        });
        listen.dedup();
        let mut p = portal(name, tag, listen, origin(self.file, line));
        let deny_what = "discovery session";
        let access = match &discovery {
            // Without discovery-auth-group a portal group (the predefined `default`
            // one too) gets auth-group `default`.
            None => self.named_access("default", line, &object, deny_what),
            Some((g, l)) => self.named_access(g, *l, &object, deny_what),
        };
        if let Some(a) = access {
            if a.initiator_group.is_some() {
                self.problem(discovery.as_ref().map_or(line, |d| d.1), &object, "the discovery auth group restricts initiator names or portals; the model restricts discovery by CHAP only");
            }
            if let Some(auth) = a.auth {
                p.discovery_auth = a.method;
                p.discovery_auth_group = Some(auth);
            }
        }
        self.m.portals.insert(name.to_string(), p);
    }

    /// Wildcards overlapping specific addresses on one port (ctld binds both with
    /// SO_REUSEADDR; the model cannot): the specific ones are dropped, reported.
    fn check_overlaps(&mut self) {
        let all: Vec<(String, SocketAddr)> = self
            .m
            .portals
            .iter()
            .flat_map(|(n, p)| p.listen.iter().map(move |a| (n.clone(), *a)))
            .collect();
        let mut drop: Vec<(String, SocketAddr, String, SocketAddr)> = Vec::new();
        for (n, a) in &all {
            if a.ip().is_unspecified() {
                continue;
            }
            if let Some((wn, w)) = all.iter().find(|(_, w)| {
                w.ip().is_unspecified() && w.port() == a.port() && (w.is_ipv6() || a.is_ipv4())
            }) {
                drop.push((n.clone(), *a, wn.clone(), *w));
            }
        }
        for (n, a, wn, w) in drop {
            let line = self.m.portals[&n].origin.line;
            self.problem(line, &format!("portal-group {n:?}"), format!("listen {a} overlaps listen {w} of portal-group {wn:?}: ctld binds both, the model cannot (a connection to {a} reaches the targets of {wn:?} only); {a} is not imported"));
            if let Some(p) = self.m.portals.get_mut(&n) {
                p.listen.retain(|x| *x != a);
            }
        }
    }

    fn target(&mut self, t: &Stmt) {
        let Some(raw) = arg(t, 1).map(str::to_string) else {
            self.problem(t.line, "target", "a target without a name; not imported");
            return;
        };
        let object = format!("target {raw:?}");
        let lname = raw.to_ascii_lowercase();
        if lname != raw {
            let at = self.at(t.line);
            self.r.note(
                &at,
                &object,
                format!("iSCSI names compare case-insensitively (RFC 3722); written as {lname:?}"),
            );
        }
        let name = match IscsiName::parse(&lname) {
            Ok(n) => n,
            Err(e) => {
                self.problem(
                    t.line,
                    &object,
                    format!("{}; the target is not imported ({})", e.problem, e.fix),
                );
                return;
            }
        };
        let short = lname.rsplit(':').next().unwrap_or(&lname).to_string();
        let mut inline = AuthGroup {
            line: t.line,
            ..AuthGroup::default()
        };
        let mut target_ag: Option<(String, u32)> = None;
        let mut pgs: Vec<(String, Option<String>, u32)> = Vec::new();
        let mut alias = None;
        let mut luns: BTreeMap<u16, String> = BTreeMap::new();
        for s in t.body.as_deref().unwrap_or_default() {
            if self.auth_stmt(&mut inline, s, &object) {
                continue;
            }
            let v = arg(s, 1).map(str::to_string);
            match (s.words[0].as_str(), &s.body) {
                ("alias", None) => alias = v,
                ("auth-group", None) => target_ag = v.map(|v| (v, s.line)),
                ("portal-group", None) => {
                    if let Some(pg) = v {
                        pgs.push((pg, arg(s, 2).map(str::to_string), s.line))
                    }
                }
                ("lun", Some(body)) => {
                    let Some(id) = self.lun_id(s, &object) else {
                        continue;
                    };
                    let lobj = format!("{object} lun {id}");
                    let base = format!("{short}-lun{id}");
                    if let Some(e) = self.extent(body, &lobj, &base, &raw, s.line) {
                        luns.insert(id, e);
                    }
                }
                ("lun", None) if s.words.len() == 3 => {
                    let Some(id) = self.lun_id(s, &object) else {
                        continue;
                    };
                    let lname = s.words[2].clone();
                    let e = match self.named_extents.get(&lname) {
                        Some(e) => {
                            let e = e.clone();
                            if let Some(x) = self.m.extents.get_mut(&e) {
                                x.shared = true;
                            }
                            Some(e)
                        }
                        None => match self.named_luns.get(&lname).cloned() {
                            Some(def) => {
                                let lobj = format!("lun {lname:?}");
                                let e = self.extent(
                                    def.body.as_deref().unwrap_or_default(),
                                    &lobj,
                                    &object_name(&lname),
                                    &raw,
                                    def.line,
                                );
                                if let Some(e) = &e {
                                    self.named_extents.insert(lname.clone(), e.clone());
                                }
                                e
                            }
                            None => {
                                self.problem(s.line, &object, format!("lun {id} names LUN {lname:?}, which is not defined; not imported"));
                                None
                            }
                        },
                    };
                    if let Some(e) = e {
                        luns.insert(id, e);
                    }
                }
                (k, _) => {
                    let line = s.line;
                    self.problem(
                        line,
                        &object,
                        format!(
                            "`{}`: {}",
                            s.words.join(" "),
                            match k {
                                "redirect" => "the model has no login redirection",
                                "port" => "the model exports iSCSI targets only, not CTL ports",
                                "portal-group" | "lun" => "malformed; not imported",
                                _ => "not a target setting the model knows; not imported",
                            }
                        ),
                    );
                }
            }
        }
        let has_inline = !inline.chaps.is_empty()
            || !inline.names.is_empty()
            || !inline.portals.is_empty()
            || inline.auth_type.is_some();
        if has_inline && target_ag.is_some() {
            self.problem(t.line, &object, "auth-group together with chap/initiator settings in one target is a ctld configuration error; the auth-group is used");
        }
        let target_access = match (&target_ag, has_inline) {
            (Some((g, l)), _) => self.named_access(g, *l, &object, "login"),
            (None, true) => self.access_for(&format!("\0target {raw}"), &short, &inline, &object),
            // A target without auth settings gets auth-group `default` (ctld's
            // predefined one denies every login), unless each of its portal groups
            // names an auth group of its own.
            (None, false) if !pgs.is_empty() && pgs.iter().all(|p| p.1.is_some()) => None,
            (None, false) => self.named_access(
                "default",
                t.line,
                &object,
                "login to this target (no auth-group, chap or initiator settings)",
            ),
        };
        if pgs.is_empty() {
            pgs.push(("default".into(), None, t.line));
        }
        let mut groups = Vec::new();
        for (pg, ag, line) in pgs {
            if !self.m.portals.contains_key(&pg) {
                self.problem(
                    line,
                    &object,
                    format!("portal-group {pg:?} is not defined (ctld refuses this); not imported"),
                );
                continue;
            }
            let access = match ag {
                Some(ag) => self.named_access(&ag, line, &object, "login"),
                None => target_access.clone(),
            }
            .unwrap_or_default();
            groups.push(TargetGroup {
                portal: pg,
                initiator_group: access.initiator_group,
                auth: access.auth,
                auth_method: access.method,
                chap_optional: false,
                origin: origin(self.file, line),
            });
        }
        if groups.is_empty() {
            self.problem(
                t.line,
                &object,
                "reachable through no portal group; not imported",
            );
            return;
        }
        self.m.targets.insert(
            name.clone(),
            Target {
                key: name.as_str().to_string(),
                name,
                alias,
                luns,
                groups,
                origin: origin(self.file, t.line),
            },
        );
    }

    fn lun_id(&mut self, s: &Stmt, object: &str) -> Option<u16> {
        match arg(s, 1).and_then(|v| v.parse::<u64>().ok()) {
            Some(n) if n <= u64::from(limits::MAX_LUN) => Some(n as u16),
            _ => {
                self.problem(
                    s.line,
                    object,
                    format!(
                        "`{}`: the model's LUN ids are 0 to {}; not imported",
                        s.words.join(" "),
                        limits::MAX_LUN
                    ),
                );
                None
            }
        }
    }

    /// An extent from a LUN block; its name, or `None` when it cannot be imported.
    fn extent(
        &mut self,
        body: &[Stmt],
        lobj: &str,
        base: &str,
        target: &str,
        line: u32,
    ) -> Option<String> {
        let mut path: Option<(String, u32)> = None;
        let mut size: Option<(u64, u32)> = None;
        let mut blocksize = 512u32;
        let mut serial: Option<String> = None;
        let mut backend = "block".to_string();
        let mut readonly = false;
        let mut rpm = Rpm::Unknown;
        let mut write_back = true;
        let mut naa = None;
        for s in body {
            let v = arg(s, 1).unwrap_or_default().to_string();
            let l = s.line;
            match s.words[0].as_str() {
                "path" => path = Some((v, l)),
                "size" => match expand_number(&v) {
                    Some(n) => size = Some((n, l)),
                    None => self.problem(l, lobj, format!("size {v:?} is not a number of bytes with an optional k/m/g/t/p/e suffix; not imported")),
                },
                "blocksize" => match v.parse::<u32>() {
                    Ok(b) if limits::BLOCK_SIZES.contains(&b) => blocksize = b,
                    _ => self.problem(l, lobj, format!("blocksize {v:?}: the model takes 512, 1024, 2048 or 4096; imported as 512")),
                },
                "serial" => match serial_problem(&v) {
                    None => serial = Some(v),
                    Some(p) => self.problem(l, lobj, format!("{p}; not imported")),
                },
                "backend" => backend = v,
                "device-type" if matches!(v.as_str(), "disk" | "direct" | "0") => {}
                "option" => {
                    let val = arg(s, 2).unwrap_or_default().to_string();
                    match (v.as_str(), val.as_str()) {
                        ("readonly", "on") => readonly = true,
                        ("readonly", "off") => readonly = false,
                        ("rpm", "1") => rpm = Rpm::Ssd,
                        ("rpm", "0") => rpm = Rpm::Unknown,
                        ("writecache", "off") => write_back = false,
                        ("writecache", "on") => write_back = true,
                        ("file", _) => path = Some((val, l)),
                        ("naa", n) if (n.len() == 18 || n.len() == 34) && n.starts_with("0x") && n[2..].bytes().all(|b| b.is_ascii_hexdigit()) => {
                            naa = Some(n.to_ascii_lowercase())
                        }
                        _ => self.problem(l, lobj, format!("`option {v} {val}`: the model has no such CTL option")),
                    }
                }
                k => self.problem(
                    l,
                    lobj,
                    format!(
                        "`{}`: {}",
                        s.words.join(" "),
                        match k {
                            "device-id" => "the model has no device identification string (VPD 0x83); only `naa`",
                            "device-type" => "the model exports disks only",
                            "ctl-lun" => "the model does not choose CTL's kernel LUN number",
                            _ => "not a LUN setting the model knows; not imported",
                        }
                    ),
                ),
            }
        }
        let serial = match serial {
            Some(s) => s,
            None => {
                self.problem(line, lobj, "no serial: CTL generates one from its kernel LUN number at run time (`ctladm devlist -v` shows it); the model derives another: set `serial` to keep what initiators see");
                String::new()
            }
        };
        let backing = match backend.as_str() {
            "ramdisk" => match size {
                Some((n, _)) => Backing::Ramdisk { size: n },
                None => {
                    self.problem(line, lobj, "a ramdisk LUN without size; not imported");
                    return None;
                }
            },
            "block" => {
                let Some((p, pl)) = path.clone() else {
                    self.problem(line, lobj, "a LUN without path; not imported");
                    return None;
                };
                if !p.starts_with('/') {
                    self.problem(
                        pl,
                        lobj,
                        format!("path {p:?} is not absolute; not imported"),
                    );
                    return None;
                }
                if p.starts_with("/dev/") {
                    if let Some((n, sl)) = size {
                        self.problem(sl, lobj, format!("size {n} bytes on a device: CTL exports that many bytes of it, the model the whole device"));
                    }
                    Backing::Block {
                        device: PathBuf::from(&p),
                    }
                } else {
                    Backing::File {
                        path: PathBuf::from(&p),
                        size: size.map(|s| s.0),
                    }
                }
            }
            other => {
                self.problem(line, lobj, format!("backend {other:?}: the model has block (files, devices) and ramdisk; not imported"));
                return None;
            }
        };
        if let (Backing::File { size: Some(n), .. } | Backing::Ramdisk { size: n }, Some((_, sl))) =
            (&backing, size)
        {
            if n % u64::from(blocksize) != 0 {
                self.problem(sl, lobj, format!("size {n} bytes is not a multiple of the block size {blocksize}; CTL exports {} whole blocks, the model needs whole blocks: set the size by hand", n / u64::from(blocksize)));
            }
        }
        if backend == "ramdisk" && path.is_some() {
            self.problem(
                line,
                lobj,
                "a ramdisk LUN's path is ignored by CTL; not imported",
            );
        }
        let key = match &backing {
            Backing::File { path, .. } => Some(path.display().to_string()),
            Backing::Block { device } => Some(device.display().to_string()),
            Backing::Ramdisk { .. } => None,
        };
        if let Some(k) = &key {
            if let Some((e, owner)) = self.paths.get(k).cloned() {
                self.problem(line, lobj, format!("{k:?} is also a LUN of target {owner:?}: the model has one extent per path, with one serial and one set of options: that LUN's extent is mapped here too"));
                if let Some(x) = self.m.extents.get_mut(&e) {
                    x.shared = true;
                }
                return Some(e);
            }
        }
        let name = unique(
            &self.m.extents,
            &object_name(&match &key {
                Some(k) => k.clone(),
                None => base.to_string(),
            }),
        );
        let serial = if serial.is_empty() {
            crate::model::derived_serial(None, &name)
        } else {
            serial
        };
        let backing_kind = backing.type_name();
        self.m.extents.insert(
            name.clone(),
            Extent {
                name: name.clone(),
                backing,
                blocksize,
                serial,
                naa,
                readonly,
                rpm,
                comment: String::new(),
                enabled: true,
                shared: false,
                // A ramdisk has no medium to write back to (the model refuses the key).
                write_back: write_back && !matches!(backing_kind, "ramdisk"),
                model_alias: false,
                origin: origin(self.file, line),
            },
        );
        if let Some(k) = key {
            self.paths.insert(k, (name.clone(), target.to_string()));
        }
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imp(text: &str) -> Imported {
        import_str(Path::new("ctl.conf"), text).expect("imports")
    }

    #[test]
    fn sizes_are_read_as_expand_number_does() {
        assert_eq!(expand_number("4G"), Some(4 << 30));
        assert_eq!(expand_number("10m"), Some(10 << 20));
        assert_eq!(expand_number("512"), Some(512));
        assert_eq!(expand_number("1kb"), Some(1024));
        assert_eq!(expand_number("1.5G"), None);
        assert_eq!(expand_number("G"), None);
    }

    #[test]
    fn a_complete_configuration() {
        let i = imp(r#"
auth-group ag0 {
    chap-mutual "alice" "alicesecret12" "ctld" "ctldsecret123"
    initiator-name iqn.1994-09.org.freebsd:client1
    initiator-portal 192.168.1.0/24
}
auth-group disc { chap discover discoversecret }
portal-group pg0 {
    discovery-auth-group disc
    listen 0.0.0.0:3261
    listen [::]:3261
}
target iqn.2012-06.com.example:db {
    alias "Database"
    auth-group ag0
    portal-group pg0
    lun 0 {
        path /srv/iscsi/db.img
        size 4G
        blocksize 4096
        serial DB0
        option rpm 1
    }
    lun 1 shared
}
lun shared {
    path /dev/zvol/tank/shared
    serial SHARED1
    option writecache off
}
target iqn.2012-06.com.example:open {
    auth-group no-authentication
    portal-group pg0
    lun 0 shared
}
"#);
        assert!(i.problems.is_empty(), "{:#?}", i.problems);
        let m = &i.model;
        let pg = &m.portals["pg0"];
        assert_eq!(pg.tag, 2);
        assert_eq!(pg.listen, vec!["[::]:3261".parse::<SocketAddr>().unwrap()]);
        assert_eq!(pg.discovery_auth, AuthMethod::Chap);
        let db = &m.targets[&IscsiName::parse("iqn.2012-06.com.example:db").unwrap()];
        assert_eq!(db.alias.as_deref(), Some("Database"));
        let g = &db.groups[0];
        assert_eq!(g.auth_method, AuthMethod::MutualChap);
        let ig = &m.initiator_groups[g.initiator_group.as_ref().unwrap()];
        assert_eq!((ig.initiators.len(), ig.networks.len()), (1, 1));
        let e0 = &m.extents[&db.luns[&0]];
        assert_eq!(
            e0.backing,
            Backing::File {
                path: "/srv/iscsi/db.img".into(),
                size: Some(4 << 30)
            }
        );
        assert_eq!(
            (e0.blocksize, e0.serial.as_str(), e0.rpm),
            (4096, "DB0", Rpm::Ssd)
        );
        let e1 = &m.extents[&db.luns[&1]];
        assert!(e1.shared && !e1.write_back);
        let open = &m.targets[&IscsiName::parse("iqn.2012-06.com.example:open").unwrap()];
        assert_eq!(open.luns[&0], db.luns[&1]);
        assert_eq!(open.groups[0].auth, None);
    }

    #[test]
    fn what_ctld_denies_or_the_model_lacks_is_reported() {
        let i = imp("
target iqn.2012-06.com.example:t {
    lun 0 {
        path /dev/da1
        device-id xyz
        option vendor ACME
    }
}
");
        let p: Vec<_> = i.problems.iter().map(|p| p.problem.as_str()).collect();
        assert!(p.iter().any(|p| p.contains("denies every login")), "{p:?}");
        assert!(
            p.iter().any(|p| p.contains("device identification")),
            "{p:?}"
        );
        assert!(p.iter().any(|p| p.contains("option vendor ACME")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("no serial")), "{p:?}");
        // default portal group, tag 1, dual-stack 3260.
        assert_eq!(i.model.portals["default"].tag, 1);
    }

    #[test]
    fn a_defined_default_auth_group_replaces_the_predefined_one() {
        let i = imp("
auth-group default {
    chap admin adminsecret12
}
portal-group pg { listen 192.0.2.1 }
target iqn.2012-06.com.example:t {
    portal-group pg
    lun 0 {
        path /dev/da1
        serial S1
    }
}
");
        assert!(i.problems.is_empty(), "{:#?}", i.problems);
        let t = i.model.targets.values().next().unwrap();
        assert_eq!(t.groups[0].auth.as_deref(), Some("default"));
        assert_eq!(i.model.portals["pg"].discovery_auth, AuthMethod::Chap);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = import_str(Path::new("c.conf"), "target x {\n lun 0 {\n").unwrap_err();
        assert!(e.to_string().contains("not closed"), "{e}");
        let e = import_str(Path::new("c.conf"), "}\n").unwrap_err();
        assert!(e.to_string().starts_with("c.conf:1: error:"), "{e}");
    }
}
