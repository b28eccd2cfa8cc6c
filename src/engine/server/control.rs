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

use super::{ServeError, Server};

/// The running control socket.
pub struct Control {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Control {
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listen on `path`. A stale socket (nobody answers) is replaced; a live one means
/// another engine runs and is an error.
pub fn start(server: Arc<Server>, path: &Path) -> Result<Control, ServeError> {
    let err = |source: io::Error| ServeError::Control {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
    }
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
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
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
                    .filter(|s| s.target.as_deref() == Some(&t.name))
                    .count(),
            })
            .collect(),
        sessions: sessions.len(),
        connections: sessions.iter().map(|s| s.conns().len()).sum(),
    }
}

/// A session of the engine as every backend reports sessions.
pub fn session_record(s: &EngineSession, conns: &[ConnEntry]) -> Session {
    Session {
        target: s.target.clone().unwrap_or_default(),
        tpg: s.portal_group_tag,
        initiator: s.initiator.clone(),
        dynamic: false,
        alias: s.initiator_alias.clone(),
        isid: Some(s.isid.iter().map(|b| format!("{b:02x}")).collect()),
        tsih: Some(s.tsih),
        session_id: Some(u32::from(s.tsih)),
        session_type: Some(
            if s.target.is_some() {
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
            })
            .collect(),
    }
}

pub fn sessions(server: &Server) -> Vec<Session> {
    server
        .registry()
        .all()
        .iter()
        .map(|s| session_record(s, &s.conns()))
        .collect()
}

/// Client side: send one request to the engine at `path` and return its reply.
pub fn request(path: &Path, req: &Request) -> io::Result<Reply> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let line = serde_json::to_string(req).map_err(io::Error::other)?;
    writeln!(stream, "{line}")?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
