//! The engine's control socket: a Unix socket (mode 0600) that answers one JSON
//! request per connection with one JSON reply. The other `isctl` commands use it
//! with `--backend userspace`: `status`, `sessions`, `plan` and `apply` (a new model,
//! applied as a diff, refused when it would cut sessions unless forced).
//!
//! Protocol (one line each way):
//! `{"op":"status"}`, `{"op":"sessions"}`, `{"op":"plan","path":P}`,
//! `{"op":"apply","path":P,"force":false}`, `{"op":"reload","force":false}` →
//! `{"ok":true,"result":...}` or `{"ok":false,"error":"...","changes":[...]}`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{ServeError, Server};

/// A request to the engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Status,
    Sessions,
    Plan { path: PathBuf },
    Apply { path: PathBuf, force: bool },
    Reload { force: bool },
}

/// What `status` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub source: PathBuf,
    pub started_unix: u64,
    pub portals: Vec<PortalStatus>,
    pub targets: Vec<TargetStatus>,
    pub sessions: usize,
    pub connections: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortalStatus {
    pub name: String,
    pub tag: u16,
    pub listen: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetStatus {
    pub name: String,
    pub alias: Option<String>,
    pub luns: Vec<LunStatus>,
    pub sessions: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LunStatus {
    pub lun: u16,
    pub extent: String,
    pub size_bytes: u64,
    pub block_size: u32,
    pub readonly: bool,
    pub write_back: bool,
}

/// One session as `sessions` answers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionStatus {
    pub tsih: u16,
    pub initiator: String,
    pub initiator_alias: Option<String>,
    pub isid: String,
    /// `None` for a discovery session.
    pub target: Option<String>,
    pub portal_group_tag: u16,
    pub started_unix: u64,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub immediate_data: bool,
    pub initial_r2t: bool,
    pub connections: Vec<ConnectionStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionStatus {
    pub cid: u16,
    pub peer: String,
    pub local: String,
    pub header_digest: bool,
    pub data_digest: bool,
    pub max_send_segment: u32,
}

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
        Err(e) => serde_json::json!({"ok": false, "error": format!("bad request: {e}")}),
    };
    let mut stream = stream;
    let _ = writeln!(stream, "{reply}");
}

fn answer(server: &Arc<Server>, req: Request) -> serde_json::Value {
    let ok = |v: serde_json::Value| serde_json::json!({"ok": true, "result": v});
    match req {
        Request::Status => ok(serde_json::to_value(status(server)).unwrap_or_default()),
        Request::Sessions => ok(serde_json::to_value(sessions(server)).unwrap_or_default()),
        Request::Plan { path } | Request::Apply { path, .. } if !path.is_absolute() => {
            serde_json::json!({"ok": false, "error": format!("{}: the engine needs an absolute path", path.display())})
        }
        Request::Plan { path } => reconfigure_from(server, path, false, true),
        Request::Apply { path, force } => reconfigure_from(server, path, force, false),
        Request::Reload { force } => {
            let path = server.config().source.clone();
            reconfigure_from(server, path, force, false)
        }
    }
}

/// Load the model at `path` and plan (`dry_run`) or apply it, as a JSON reply.
fn reconfigure_from(
    server: &Arc<Server>,
    path: PathBuf,
    force: bool,
    dry_run: bool,
) -> serde_json::Value {
    let result = crate::model::load(&path)
        .map_err(ServeError::from)
        .and_then(|l| server.reconfigure(l.model, path, force, dry_run));
    match result {
        Ok(r) => {
            serde_json::json!({"ok": true, "result": serde_json::to_value(r).unwrap_or_default()})
        }
        Err(e) => failure(e),
    }
}

fn failure(e: ServeError) -> serde_json::Value {
    match &e {
        ServeError::Refused { changes, .. } => {
            serde_json::json!({"ok": false, "refused": true, "error": e.to_string(), "changes": changes})
        }
        ServeError::Model(m) => {
            serde_json::json!({"ok": false, "invalid_model": true, "error": m.to_string()})
        }
        _ => serde_json::json!({"ok": false, "error": e.to_string()}),
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

pub fn sessions(server: &Server) -> Vec<SessionStatus> {
    server
        .registry()
        .all()
        .iter()
        .map(|s| SessionStatus {
            tsih: s.tsih,
            initiator: s.initiator.clone(),
            initiator_alias: s.initiator_alias.clone(),
            isid: s.isid.iter().map(|b| format!("{b:02x}")).collect(),
            target: s.target_name().map(str::to_owned),
            portal_group_tag: s.portal_group_tag,
            started_unix: unix(s.started),
            max_burst_length: s.params.max_burst_length,
            first_burst_length: s.params.first_burst_length,
            immediate_data: s.params.immediate_data,
            initial_r2t: s.params.initial_r2t,
            connections: s
                .conns()
                .iter()
                .map(|c| ConnectionStatus {
                    cid: c.cid,
                    peer: c.peer.to_string(),
                    local: c.local.to_string(),
                    header_digest: c.params.header_digest,
                    data_digest: c.params.data_digest,
                    max_send_segment: c.params.send_limit,
                })
                .collect(),
        })
        .collect()
}

/// Client side: send one request to the engine at `path` and return its reply.
pub fn request(path: &Path, req: &Request) -> io::Result<serde_json::Value> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let line = serde_json::to_string(req).map_err(io::Error::other)?;
    writeln!(stream, "{line}")?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
