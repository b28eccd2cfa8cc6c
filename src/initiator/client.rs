//! A thin blocking iSCSI client over one TCP connection (std sockets, timeouts): login
//! through [`InitiatorLogin`], SendTargets, SCSI commands that move data from the
//! target only (Data-In), NOP-In answers, logout. One command at a time.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::engine::iscsi::negotiate::{encode_text, parse_text};
use crate::engine::iscsi::pdu::{
    flags, read_pdu, Bhs, Digests, Opcode, Pdu, PduWriter, RESERVED_TAG,
};

use super::login::{InitiatorLogin, LoginConfig, LoginOutcome, Next, INITIATOR_MAX_RECV};
use super::scsi::{lun_field, parse_sense, Sense};
use super::{InitiatorError, Result};

/// The largest data segment read during login (before our limit is declared).
const LOGIN_MAX_RECV: usize = 1 << 20;

/// A target and its advertised addresses, from SendTargets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiscoveredTarget {
    pub name: String,
    pub addresses: Vec<TargetAddress>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TargetAddress {
    /// `host:port` (IPv6 in brackets).
    pub address: String,
    /// Target portal group tag.
    pub tag: Option<u16>,
}

/// Parse a SendTargets answer (`TargetName=` followed by its `TargetAddress=`es).
pub fn parse_send_targets(data: &[u8]) -> Result<Vec<DiscoveredTarget>> {
    let mut out: Vec<DiscoveredTarget> = Vec::new();
    for (k, v) in parse_text(data)? {
        match k.as_str() {
            "TargetName" => out.push(DiscoveredTarget {
                name: v,
                addresses: Vec::new(),
            }),
            "TargetAddress" => {
                let (address, tag) = match v.rsplit_once(',') {
                    Some((a, t)) => (a.to_string(), t.parse().ok()),
                    None => (v.clone(), None),
                };
                if let Some(t) = out.last_mut() {
                    t.addresses.push(TargetAddress { address, tag });
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The answer to one SCSI command.
#[derive(Debug, Clone)]
pub struct ScsiReply {
    pub status: u8,
    pub data: Vec<u8>,
    pub sense: Option<Sense>,
}

/// One logged-in (or logging-in) connection.
pub struct Client {
    stream: TcpStream,
    writer: PduWriter,
    read_digests: Digests,
    max_recv: usize,
    itt: u32,
    cmd_sn: u32,
    exp_stat_sn: u32,
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// Resolve `host:port` (default port 3260).
pub fn resolve(addr: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs as _;
    let with_port = if addr.parse::<SocketAddr>().is_ok() {
        addr.to_string()
    } else if addr.parse::<IpAddr>().is_ok() {
        SocketAddr::new(addr.parse().expect("checked"), 3260).to_string()
    } else if addr.starts_with('[') && addr.ends_with(']') {
        format!("{addr}:3260")
    } else if addr.contains(':') {
        addr.to_string()
    } else {
        format!("{addr}:3260")
    };
    with_port
        .to_socket_addrs()
        .map_err(|source| InitiatorError::Connect {
            addr: addr.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| InitiatorError::Connect {
            addr: addr.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        })
}

/// Raw `sockaddr` bytes of an address (libc's layout).
fn raw_addr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write(&mut st as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: all-zero is a valid sockaddr_in6.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_scope_id = v6.scope_id();
            // SAFETY: as above.
            unsafe { std::ptr::write(&mut st as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (st, len as libc::socklen_t)
}

/// Connect from a given local address (std cannot bind before connecting).
fn connect_from(addr: SocketAddr, source: IpAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let raw = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let (local, llen) = raw_addr(SocketAddr::new(source, 0));
    // SAFETY: the pointer and length describe `local`.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &local as *const _ as *const libc::sockaddr,
            llen,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    let (remote, rlen) = raw_addr(addr);
    // SAFETY: the pointer and length describe `remote`.
    if unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &remote as *const _ as *const libc::sockaddr,
            rlen,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(TcpStream::from(fd))
}

impl Client {
    /// Connect (from `source` when given) with `timeout` for the connection and for
    /// every read and write after it.
    pub fn connect(addr: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> Result<Client> {
        let err = |source| InitiatorError::Connect {
            addr: addr.to_string(),
            source,
        };
        let stream = match source {
            Some(src) => connect_from(addr, src).map_err(err)?,
            None => TcpStream::connect_timeout(&addr, timeout).map_err(err)?,
        };
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let _ = stream.set_nodelay(true);
        Ok(Client {
            local: stream.local_addr()?,
            peer: stream.peer_addr()?,
            stream,
            writer: PduWriter::new(),
            read_digests: Digests::default(),
            max_recv: LOGIN_MAX_RECV,
            itt: 1,
            cmd_sn: 1,
            exp_stat_sn: 0,
        })
    }

    fn send(&mut self, pdu: &Pdu) -> Result<()> {
        self.writer
            .push(&mut self.stream, pdu.bhs.clone(), &pdu.data)?;
        self.writer.flush(&mut self.stream)?;
        Ok(())
    }

    fn recv(&mut self) -> Result<Pdu> {
        Ok(read_pdu(
            &mut self.stream,
            self.read_digests,
            self.max_recv,
        )?)
    }

    fn next_itt(&mut self) -> u32 {
        self.itt = self.itt.wrapping_add(1);
        if self.itt == RESERVED_TAG {
            self.itt = 1;
        }
        self.itt
    }

    /// Log in; on success the negotiated digests are on for what follows.
    pub fn login(&mut self, cfg: LoginConfig) -> Result<LoginOutcome> {
        let itt = self.next_itt();
        let mut login = InitiatorLogin::new(cfg, itt, self.cmd_sn);
        let first = login.start();
        self.send(&first)?;
        loop {
            let pdu = self.recv()?;
            match login.on_response(&pdu)? {
                Next::Send(p) => self.send(&p)?,
                Next::Done(out) => {
                    self.exp_stat_sn = out.stat_sn.wrapping_add(1);
                    self.cmd_sn = out.exp_cmd_sn;
                    let d = Digests {
                        header: out.header_digest,
                        data: out.data_digest,
                    };
                    self.writer.digests = d;
                    self.read_digests = d;
                    self.max_recv = INITIATOR_MAX_RECV as usize;
                    return Ok(*out);
                }
            }
        }
    }

    fn stamp(&mut self, b: &mut Bhs, immediate: bool) {
        b.set_cmd_sn(self.cmd_sn);
        b.set_exp_stat_sn(self.exp_stat_sn);
        if immediate {
            b.0[0] |= 0x40;
        } else {
            self.cmd_sn = self.cmd_sn.wrapping_add(1);
        }
    }

    fn saw_stat_sn(&mut self, b: &Bhs) {
        self.exp_stat_sn = b.stat_sn().wrapping_add(1);
    }

    /// Answer a NOP-In that asks for one; true when the PDU was a NOP-In or an async
    /// message (handled here), false for anything else.
    fn housekeeping(&mut self, pdu: &Pdu) -> Result<bool> {
        match pdu.bhs.opcode() {
            Opcode::NopIn => {
                if pdu.bhs.ttt() != RESERVED_TAG {
                    let mut b = Bhs::new(Opcode::NopOut);
                    b.set_flags(flags::FINAL);
                    b.set_lun_field(pdu.bhs.lun_field());
                    b.set_itt(RESERVED_TAG);
                    b.set_ttt(pdu.bhs.ttt());
                    self.stamp(&mut b, true);
                    self.send(&Pdu {
                        bhs: b,
                        ahs: Vec::new(),
                        data: pdu.data.clone(),
                    })?;
                }
                Ok(true)
            }
            Opcode::AsyncMessage => {
                // byte 36: AsyncEvent; 1 = the target asks for a logout.
                if pdu.bhs.0[36] == 1 || pdu.bhs.0[36] == 2 || pdu.bhs.0[36] == 3 {
                    return Err(InitiatorError::Protocol(format!(
                        "target sent asynchronous event {} (logout requested / connection dropped)",
                        pdu.bhs.0[36]
                    )));
                }
                Ok(true)
            }
            Opcode::Reject => Err(InitiatorError::Protocol(format!(
                "target rejected a PDU (reason 0x{:02x})",
                pdu.bhs.byte2()
            ))),
            _ => Ok(false),
        }
    }

    /// SendTargets=All (or one target) in a Text Request, following continuations.
    pub fn send_targets(&mut self, which: &str) -> Result<Vec<DiscoveredTarget>> {
        let itt = self.next_itt();
        let mut ttt = RESERVED_TAG;
        let mut data = encode_text(&[("SendTargets".into(), which.into())]);
        let mut all = Vec::new();
        loop {
            let mut b = Bhs::new(Opcode::TextRequest);
            b.set_flags(flags::FINAL);
            b.set_itt(itt);
            b.set_ttt(ttt);
            self.stamp(&mut b, false);
            self.send(&Pdu {
                bhs: b,
                ahs: Vec::new(),
                data: std::mem::take(&mut data),
            })?;
            let pdu = loop {
                let p = self.recv()?;
                if !self.housekeeping(&p)? {
                    break p;
                }
            };
            if pdu.bhs.opcode() != Opcode::TextResponse {
                return Err(InitiatorError::Protocol(format!(
                    "expected a Text Response, got {:?}",
                    pdu.bhs.opcode()
                )));
            }
            self.saw_stat_sn(&pdu.bhs);
            all.extend_from_slice(&pdu.data);
            if pdu.bhs.flags() & flags::CONTINUE == 0 {
                break;
            }
            ttt = pdu.bhs.ttt();
        }
        parse_send_targets(&all)
    }

    /// A command that reads at most `alloc` bytes from the target.
    pub fn command_in(&mut self, lun: u16, cdb: &[u8], alloc: u32) -> Result<ScsiReply> {
        let itt = self.next_itt();
        let mut b = Bhs::new(Opcode::ScsiCommand);
        // F, R (when data is expected), task attribute SIMPLE.
        b.set_flags(flags::FINAL | if alloc > 0 { flags::READ } else { 0 } | 0x01);
        b.set_lun_field(lun_field(lun));
        b.set_itt(itt);
        b.set_expected_len(alloc);
        b.0[32..32 + cdb.len()].copy_from_slice(cdb);
        self.stamp(&mut b, false);
        self.send(&Pdu {
            bhs: b,
            ahs: Vec::new(),
            data: Vec::new(),
        })?;
        let mut data: Vec<u8> = Vec::new();
        loop {
            let pdu = self.recv()?;
            if self.housekeeping(&pdu)? {
                continue;
            }
            let h = &pdu.bhs;
            if h.itt() != itt {
                return Err(InitiatorError::Protocol(format!(
                    "answer for task 0x{:08x} while waiting for 0x{itt:08x}",
                    h.itt()
                )));
            }
            match h.opcode() {
                Opcode::DataIn => {
                    let off = h.buffer_offset() as usize;
                    let end = off + pdu.data.len();
                    if end > alloc as usize {
                        return Err(InitiatorError::Protocol(
                            "Data-In beyond the expected length".into(),
                        ));
                    }
                    if data.len() < end {
                        data.resize(end, 0);
                    }
                    data[off..end].copy_from_slice(&pdu.data);
                    if h.flags() & flags::STATUS != 0 {
                        self.saw_stat_sn(h);
                        return Ok(ScsiReply {
                            status: h.byte3(),
                            data,
                            sense: None,
                        });
                    }
                }
                Opcode::ScsiResponse => {
                    self.saw_stat_sn(h);
                    if h.byte2() != 0 {
                        return Err(InitiatorError::Protocol(format!(
                            "target failure for the command (iSCSI response 0x{:02x})",
                            h.byte2()
                        )));
                    }
                    let sense = if pdu.data.len() >= 2 {
                        let n = usize::from(u16::from_be_bytes([pdu.data[0], pdu.data[1]]));
                        parse_sense(&pdu.data[2..(2 + n).min(pdu.data.len())])
                    } else {
                        None
                    };
                    return Ok(ScsiReply {
                        status: h.byte3(),
                        data,
                        sense,
                    });
                }
                other => {
                    return Err(InitiatorError::Protocol(format!(
                        "unexpected {other:?} during a command"
                    )))
                }
            }
        }
    }

    /// Logout (close the session) and wait for the answer.
    pub fn logout(&mut self) -> Result<()> {
        let itt = self.next_itt();
        let mut b = Bhs::new(Opcode::LogoutRequest);
        b.set_flags(flags::FINAL); // reason 0: close the session
        b.set_itt(itt);
        self.stamp(&mut b, true);
        self.send(&Pdu {
            bhs: b,
            ahs: Vec::new(),
            data: Vec::new(),
        })?;
        loop {
            let pdu = self.recv()?;
            if self.housekeeping(&pdu)? {
                continue;
            }
            if pdu.bhs.opcode() != Opcode::LogoutResponse {
                return Err(InitiatorError::Protocol(format!(
                    "expected a Logout Response, got {:?}",
                    pdu.bhs.opcode()
                )));
            }
            if pdu.bhs.byte2() != 0 {
                return Err(InitiatorError::Protocol(format!(
                    "logout refused (response {})",
                    pdu.bhs.byte2()
                )));
            }
            let _ = self.stream.flush();
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_targets_answer() {
        let data = b"TargetName=iqn.2026-11.x:a\0TargetAddress=127.0.0.1:3260,1\0TargetAddress=[::1]:3261,2\0TargetName=iqn.2026-11.x:b\0";
        let t = parse_send_targets(data).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "iqn.2026-11.x:a");
        assert_eq!(
            t[0].addresses,
            vec![
                TargetAddress {
                    address: "127.0.0.1:3260".into(),
                    tag: Some(1)
                },
                TargetAddress {
                    address: "[::1]:3261".into(),
                    tag: Some(2)
                }
            ]
        );
        assert!(t[1].addresses.is_empty());
    }

    #[test]
    fn portal_addresses_default_to_3260() {
        assert_eq!(resolve("127.0.0.1").unwrap().to_string(), "127.0.0.1:3260");
        assert_eq!(resolve("127.0.0.1:3261").unwrap().port(), 3261);
        assert_eq!(resolve("[::1]").unwrap().to_string(), "[::1]:3260");
        assert_eq!(resolve("[::1]:5").unwrap().port(), 5);
    }
}
