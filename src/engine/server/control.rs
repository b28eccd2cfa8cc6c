//! The engine's control socket: a Unix socket (mode 0600) that answers one request
//! per connection with one reply, in the typed protocol of [`crate::engine::api`].
//! The other `isctl` commands reach the engine through it (`backend::userspace`):
//! `status`, `sessions`, `plan` and `apply` (a new model, applied as a whole,
//! refused when it would cut sessions unless forced).
//!
//! Owns: the listening thread, decoding requests, answering them from the
//! [`Server`], and the client call [`request`].

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, UNIX_EPOCH};

use crate::engine::api::{
    LunStatus, PlanReport, PortalStatus, Reply, Request, Status, TargetStatus,
};
use crate::engine::iscsi::session::{ConnEntry, Session as EngineSession};
use crate::state::{Connection, Session};

use super::config::Config;
use super::{ServeError, Server};

/// The running control socket.
pub struct Control {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Control {
    /// Stop answering and remove the socket file. Never connects to the path: it
    /// may be gone, and the thread sees the stop flag on its own.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why a directory must not hold the control socket, if it must not: anyone who can
/// write to it could replace the socket and receive the CLI's requests (models and
/// their secrets). It must belong to this user (or root) and be writable by no one
/// else.
fn unsafe_dir(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot inspect it: {e}")),
    };
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Some(format!(
            "it belongs to uid {}, not to this user (uid {me}) or root",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "its mode {:o} lets others write to it",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// The directory the socket lives in: created with mode 0700 when missing, refused
/// when someone else could write to it.
fn secure_dir(path: &Path) -> io::Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match unsafe_dir(dir) {
        None => Ok(()),
        Some(why) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing to put the control socket in {}: {why} (use a directory only you can write to, e.g. mode 0700, or pass --socket)",
                dir.display()
            ),
        )),
    }
}

/// The user id of the process at the other end of a Unix socket.
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        Ok(getsockopt(stream, PeerCredentials)
            .map_err(io::Error::from)?
            .uid())
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let (uid, _) = nix::unistd::getpeereid(stream).map_err(io::Error::from)?;
        Ok(uid.as_raw())
    }
}

/// Only this user and root may talk to the engine, in either direction.
fn trusted(uid: u32) -> bool {
    uid == nix::unistd::geteuid().as_raw() || uid == 0
}

/// Listen on `path`. A stale socket (nobody answers) is replaced; a live one means
/// another engine runs and is an error.
pub fn start(server: Arc<Server>, path: &Path) -> Result<Control, ServeError> {
    let err = |error: io::Error| ServeError::Control {
        path: path.to_path_buf(),
        error,
    };
    secure_dir(path).map_err(err)?;
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another isctl engine answers on it; stop it or pass --socket",
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            while super::stop::readable_or_stopped(&listener, &[&stop2]) {
                let Ok((stream, _)) = listener.accept() else {
                    continue;
                };
                match peer_uid(&stream) {
                    Ok(uid) if trusted(uid) => {}
                    Ok(uid) => {
                        tracing::warn!(uid, "control socket: refused a client of another user");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(
                            "control socket: cannot tell who the client is, refused: {e}"
                        );
                        continue;
                    }
                }
                if stream.set_nonblocking(false).is_err() {
                    continue;
                }
                let server = server.clone();
                let _ = thread::Builder::new()
                    .name("control-client".into())
                    .spawn(move || handle(&server, stream));
            }
        })
        .map_err(err)?;
    Ok(Control {
        path: path.to_path_buf(),
        stop,
        thread: Some(thread),
    })
}

fn handle(server: &Arc<Server>, stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) => answer(server, req),
        Err(e) => Reply::Error {
            message: format!("bad request: {e}"),
        },
    };
    let Ok(text) = serde_json::to_string(&reply) else {
        return;
    };
    let mut stream = stream;
    let _ = writeln!(stream, "{text}");
}

fn answer(server: &Arc<Server>, req: Request) -> Reply {
    match req {
        Request::Status => Reply::Status(status(server)),
        Request::Sessions => Reply::Sessions {
            sessions: sessions(server),
        },
        Request::Stats => Reply::Stats(statistics(server)),
        Request::Plan { path, .. } | Request::Apply { path, .. } if !path.is_absolute() => {
            Reply::Error {
                message: format!("{}: the engine needs an absolute path", path.display()),
            }
        }
        Request::Plan { path, force } => match crate::model::load(&path) {
            Ok(loaded) => {
                let (served, generation) = server.plan(&loaded.model, force);
                Reply::Plan(PlanReport::from_plan(&served.plan, path, generation))
            }
            Err(e) => Reply::InvalidModel {
                message: e.to_string(),
            },
        },
        Request::Apply {
            path,
            force,
            expect_generation,
        } => reconfigure_from(server, path, force, expect_generation),
        Request::Reload { force } => {
            let path = server.config().source.clone();
            reconfigure_from(server, path, force, None)
        }
    }
}

/// Load the model at `path` and serve it.
fn reconfigure_from(
    server: &Arc<Server>,
    path: PathBuf,
    force: bool,
    expect_generation: Option<u64>,
) -> Reply {
    let result = crate::model::load(&path)
        .map_err(ServeError::from)
        .and_then(|l| server.reconfigure(l.model, path, force, expect_generation));
    match result {
        Ok(report) => Reply::Applied(report),
        Err(ServeError::Refused(plan)) => Reply::Refused(*plan),
        Err(ServeError::Model(m)) => Reply::InvalidModel {
            message: m.to_string(),
        },
        Err(e @ ServeError::Stale { .. }) => Reply::Stale {
            message: e.to_string(),
        },
        Err(e) => Reply::Error {
            message: e.to_string(),
        },
    }
}

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub fn status(server: &Server) -> Status {
    let c = server.config();
    let sessions = server.registry().all();
    Status {
        pid: std::process::id(),
        source: c.source.clone(),
        generation: server.generation(),
        started_unix: unix(server.started()),
        portals: c
            .model
            .portals
            .values()
            .map(|p| PortalStatus {
                name: p.name.clone(),
                tag: p.tag,
                listen: p.listen.iter().map(|a| a.to_string()).collect(),
            })
            .collect(),
        targets: c
            .targets
            .values()
            .map(|t| TargetStatus {
                name: t.name.clone(),
                alias: t.alias.clone(),
                luns: t
                    .luns
                    .iter()
                    .filter_map(|(l, e)| {
                        c.lus.get(e).map(|(ext, lu)| LunStatus {
                            lun: *l,
                            extent: e.clone(),
                            size_bytes: lu.num_blocks() * u64::from(lu.block_size()),
                            block_size: lu.block_size(),
                            readonly: lu.readonly(),
                            write_back: ext.write_back,
                        })
                    })
                    .collect(),
                sessions: sessions
                    .iter()
                    .filter(|s| s.target_name() == Some(t.name.as_str()))
                    .count(),
            })
            .collect(),
        sessions: sessions.len(),
        connections: sessions.iter().map(|s| s.conns().len()).sum(),
    }
}

/// Every counter, with the logged-in sessions per target.
pub fn statistics(server: &Server) -> crate::observe::stats::Statistics {
    let mut per_target = std::collections::BTreeMap::new();
    for s in server.registry().all() {
        if let Some(t) = s.target_name() {
            *per_target.entry(t.to_string()).or_insert(0) += 1;
        }
    }
    server.stats().snapshot(&per_target)
}

/// What the model says of a session: its portal group's name, the initiator groups
/// that admit it (with the first one's comment), and how each connection had to
/// authenticate (the group it logged in through).
fn admitted(config: &Config, record: &mut Session, conns: &[ConnEntry]) {
    let Some(target) = config.targets.get(&record.target) else {
        return;
    };
    for (c, entry) in record.connections.iter_mut().zip(conns) {
        let Some(portal) = config.portal_for(entry.listen) else {
            continue;
        };
        record
            .portal_group
            .get_or_insert_with(|| portal.name.clone());
        let ip = entry.peer.ip();
        if let Ok(group) = config.group_for(target, &portal.name, &record.initiator, ip) {
            let mutual = group
                .auth
                .as_ref()
                .and_then(|a| config.model.auths.get(a))
                .is_some_and(|a| a.peer.is_some());
            c.authentication = Some(
                match group.auth_method {
                    crate::model::AuthMethod::None => "none",
                    _ if mutual => "mutual_chap",
                    crate::model::AuthMethod::Chap => "chap",
                    crate::model::AuthMethod::MutualChap => "mutual_chap",
                }
                .into(),
            );
        }
        for g in target.groups.iter().filter(|g| g.portal == portal.name) {
            let Some(name) = &g.initiator_group else {
                continue;
            };
            if config.admits(g, &record.initiator, ip) && !record.igroups.contains(name) {
                if record.initiator_comment.is_none() {
                    record.initiator_comment = config
                        .model
                        .initiator_groups
                        .get(name)
                        .map(|ig| ig.comment.clone())
                        .filter(|c| !c.is_empty());
                }
                record.igroups.push(name.clone());
            }
        }
    }
}

/// A session of the engine as every backend reports sessions.
pub fn session_record(s: &EngineSession, conns: &[ConnEntry]) -> Session {
    Session {
        target: s.target_name().unwrap_or_default().to_owned(),
        tpg: s.portal_group_tag,
        initiator: s.initiator.clone(),
        dynamic: false,
        alias: s.initiator_alias.clone(),
        isid: Some(s.isid.iter().map(|b| format!("{b:02x}")).collect()),
        tsih: Some(s.tsih),
        session_id: Some(u32::from(s.tsih)),
        session_type: Some(
            if s.target_name().is_some() {
                "Normal"
            } else {
                "Discovery"
            }
            .into(),
        ),
        state: Some("LOGGED_IN".into()),
        connections: conns
            .iter()
            .map(|c| Connection {
                cid: c.cid,
                state: "LOGGED_IN".into(),
                address: c.peer.ip().to_string(),
                transport: "TCP".into(),
                local_address: Some(c.local.to_string()),
                header_digest: Some(c.params.header_digest),
                data_digest: Some(c.params.data_digest),
                port: Some(c.peer.port()),
                max_recv_data_segment_length: Some(c.params.send_limit),
                ..Connection::default()
            })
            .collect(),
        params: Some(crate::state::SessionParameters {
            max_connections: s.params.max_connections,
            initial_r2t: s.params.initial_r2t,
            immediate_data: s.params.immediate_data,
            max_burst_length: s.params.max_burst_length,
            first_burst_length: s.params.first_burst_length,
        }),
        ..Session::default()
    }
}

pub fn sessions(server: &Server) -> Vec<Session> {
    let config = server.config();
    server
        .registry()
        .all()
        .iter()
        .map(|s| {
            let conns = s.conns();
            let mut record = session_record(s, &conns);
            admitted(&config, &mut record, &conns);
            record
        })
        .collect()
}

/// Client side: send one request to the engine at `path` and return its reply.
pub fn request(path: &Path, req: &Request) -> io::Result<Reply> {
    let mut stream = UnixStream::connect(path)?;
    // The request may carry a model with secrets: only to this user's or root's engine.
    let server = peer_uid(&stream)?;
    if !trusted(server) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the socket is served by uid {server}, neither this user nor root: refusing to talk to it"),
        ));
    }
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let line = serde_json::to_string(req).map_err(io::Error::other)?;
    writeln!(stream, "{line}")?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir_with_mode(mode: u32) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        d
    }

    #[test]
    fn accepts_a_private_directory_and_creates_a_missing_one_private() {
        let d = dir_with_mode(0o700);
        assert!(secure_dir(&d.path().join("engine.sock")).is_ok());
        let sock = d.path().join("new/engine.sock");
        secure_dir(&sock).unwrap();
        let mode = std::fs::metadata(d.path().join("new"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn rejects_a_directory_others_can_write() {
        let d = dir_with_mode(0o777);
        let e = secure_dir(&d.path().join("engine.sock")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("lets others write"), "{e}");
    }

    #[test]
    #[ignore = "needs root to give a directory away: run via tests/run.sh"]
    fn rejects_a_directory_another_user_owns() {
        let d = dir_with_mode(0o700);
        let other = nix::unistd::Uid::from_raw(65534);
        nix::unistd::chown(d.path(), Some(other), None).expect("chown needs root");
        let e = secure_dir(&d.path().join("engine.sock")).unwrap_err();
        assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
    }

    #[test]
    fn the_peer_of_a_socket_pair_is_this_user() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a).unwrap(), nix::unistd::geteuid().as_raw());
        assert!(trusted(peer_uid(&a).unwrap()));
    }
}
