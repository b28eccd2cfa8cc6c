//! A minimal iSCSI initiator that logs in and then just stays logged in.
//!
//! libiscsi's tools log out when their one command is done; the safety tests need a session
//! that is held open while isctl plans and applies in the VM. This speaks RFC 7143 just far
//! enough: a Normal session's login (security stage with None or CHAP/MD5, one-way or
//! mutual; operational stage; full feature phase) and then answers the target's NOP-In pings
//! so LIO keeps the session. Dropping the holder closes the connection.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use md5::{Digest, Md5};

/// Who logs in where, with which credentials.
#[derive(Debug, Clone)]
pub struct LoginSpec {
    pub initiator: String,
    pub target: String,
    /// One-way CHAP: the initiator's user and secret.
    pub chap: Option<(String, String)>,
    /// Mutual CHAP: the user and secret the target must prove.
    pub mutual: Option<(String, String)>,
}

/// A logged-in session, kept alive by a background thread until dropped.
pub struct SessionHolder {
    stream: TcpStream,
    alive: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub tsih: u16,
    pub isid: [u8; 6],
}

/// Why a login did not reach the full feature phase.
#[derive(Debug)]
pub struct LoginRejected {
    pub status_class: u8,
    pub status_detail: u8,
}

impl std::fmt::Display for LoginRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match (self.status_class, self.status_detail) {
            (2, 1) => "authentication failure",
            (2, 2) => "authorization failure",
            (2, 3) => "target not found",
            (2, 0) => "initiator error",
            (3, _) => "target error",
            _ => "login rejected",
        };
        write!(
            f,
            "{what} (status class {:#04x}, detail {:#04x})",
            self.status_class, self.status_detail
        )
    }
}

impl std::error::Error for LoginRejected {}

static ISID_COUNTER: AtomicU32 = AtomicU32::new(1);

impl SessionHolder {
    /// Logs in to `addr` (e.g. "127.0.0.1:13360") and keeps the session.
    pub fn login(addr: &str, spec: &LoginSpec) -> Result<SessionHolder> {
        let mut stream =
            TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.set_nodelay(true)?;
        let n = ISID_COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // ISID type "random" (0x80), then bytes unique per process and holder.
        let isid = [
            0x80,
            (pid >> 8) as u8,
            pid as u8,
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
        ];
        let mut login = LoginState {
            isid,
            itt: 0x1000 + n,
            cmdsn: 1,
            exp_statsn: 0,
            tsih: 0,
        };
        login.security_stage(&mut stream, spec)?;
        login.operational_stage(&mut stream)?;

        let alive = Arc::new(AtomicBool::new(true));
        let reader = stream.try_clone()?;
        reader.set_read_timeout(None)?;
        let thread = {
            let alive = alive.clone();
            let cmdsn = login.cmdsn;
            std::thread::spawn(move || keep_alive(reader, cmdsn, alive))
        };
        Ok(SessionHolder {
            stream,
            alive,
            thread: Some(thread),
            tsih: login.tsih,
            isid,
        })
    }

    /// False once the target closed the connection (the session was cut).
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for the target to cut the session; true if it did.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if !self.is_alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        !self.is_alive()
    }
}

impl Drop for SessionHolder {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct LoginState {
    isid: [u8; 6],
    itt: u32,
    cmdsn: u32,
    exp_statsn: u32,
    tsih: u16,
}

impl LoginState {
    fn exchange(
        &mut self,
        stream: &mut TcpStream,
        csg: u8,
        nsg: Option<u8>,
        keys: &[(&str, String)],
    ) -> Result<(u8, BTreeMap<String, String>)> {
        let mut data = Vec::new();
        for (k, v) in keys {
            data.extend_from_slice(format!("{k}={v}").as_bytes());
            data.push(0);
        }
        let mut bhs = [0u8; 48];
        bhs[0] = 0x40 | 0x03; // immediate Login Request
        bhs[1] = (csg << 2) | nsg.map_or(0, |n| 0x80 | n);
        let len = data.len() as u32;
        bhs[5..8].copy_from_slice(&len.to_be_bytes()[1..]);
        bhs[8..14].copy_from_slice(&self.isid);
        bhs[14..16].copy_from_slice(&self.tsih.to_be_bytes());
        bhs[16..20].copy_from_slice(&self.itt.to_be_bytes());
        bhs[24..28].copy_from_slice(&self.cmdsn.to_be_bytes());
        bhs[28..32].copy_from_slice(&self.exp_statsn.to_be_bytes());
        write_pdu(stream, &bhs, &data)?;

        let (rsp, rdata) = read_pdu(stream).context("reading the login response")?;
        if rsp[0] & 0x3f != 0x23 {
            bail!(
                "expected a Login Response, got opcode {:#04x}",
                rsp[0] & 0x3f
            );
        }
        let (class, detail) = (rsp[36], rsp[37]);
        if class != 0 {
            return Err(LoginRejected {
                status_class: class,
                status_detail: detail,
            }
            .into());
        }
        self.tsih = u16::from_be_bytes([rsp[14], rsp[15]]);
        self.exp_statsn = u32::from_be_bytes(rsp[24..28].try_into()?).wrapping_add(1);
        let transit_to = if rsp[1] & 0x80 != 0 {
            rsp[1] & 0x03
        } else {
            0xff
        };
        Ok((transit_to, parse_keys(&rdata)))
    }

    fn security_stage(&mut self, stream: &mut TcpStream, spec: &LoginSpec) -> Result<()> {
        let mut first = vec![
            ("InitiatorName", spec.initiator.clone()),
            ("SessionType", "Normal".to_string()),
            ("TargetName", spec.target.clone()),
        ];
        let Some((user, secret)) = &spec.chap else {
            first.push(("AuthMethod", "None".to_string()));
            let (to, _) = self.exchange(stream, 0, Some(1), &first)?;
            if to != 1 {
                bail!("the target did not accept AuthMethod=None (it wants authentication)");
            }
            return Ok(());
        };
        first.push(("AuthMethod", "CHAP".to_string()));
        let (_, keys) = self.exchange(stream, 0, None, &first)?;
        if keys.get("AuthMethod").map(String::as_str) != Some("CHAP") {
            bail!("the target did not choose CHAP: {keys:?}");
        }
        let (_, keys) = self.exchange(stream, 0, None, &[("CHAP_A", "5".to_string())])?;
        let id: u8 = keys
            .get("CHAP_I")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no CHAP_I in {keys:?}"))?;
        let challenge = decode_hex(keys.get("CHAP_C").ok_or_else(|| anyhow!("no CHAP_C"))?)?;
        let mut reply = vec![
            ("CHAP_N", user.clone()),
            (
                "CHAP_R",
                format!("0x{}", hex(&chap_md5(id, secret, &challenge))),
            ),
        ];
        let my_id: u8 = 7;
        let my_challenge: Vec<u8> = (0..16u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        if spec.mutual.is_some() {
            reply.push(("CHAP_I", my_id.to_string()));
            reply.push(("CHAP_C", format!("0x{}", hex(&my_challenge))));
        }
        let (to, keys) = self.exchange(stream, 0, Some(1), &reply)?;
        if let Some((peer_user, peer_secret)) = &spec.mutual {
            let got_user = keys.get("CHAP_N").map(String::as_str);
            if got_user != Some(peer_user.as_str()) {
                bail!("mutual CHAP: the target answered as {got_user:?}, expected {peer_user:?}");
            }
            let got = decode_hex(keys.get("CHAP_R").ok_or_else(|| anyhow!("no CHAP_R"))?)?;
            if got != chap_md5(my_id, peer_secret, &my_challenge) {
                bail!("mutual CHAP: the target's response is wrong");
            }
        }
        if to != 1 {
            bail!("the target did not move to the operational stage after CHAP");
        }
        Ok(())
    }

    fn operational_stage(&mut self, stream: &mut TcpStream) -> Result<()> {
        let keys: Vec<(&str, String)> = [
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("ErrorRecoveryLevel", "0"),
            ("InitialR2T", "Yes"),
            ("ImmediateData", "Yes"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "65536"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"),
            ("MaxOutstandingR2T", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("MaxConnections", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        let (mut to, _) = self.exchange(stream, 1, Some(3), &keys)?;
        for _ in 0..4 {
            if to == 3 {
                return Ok(());
            }
            (to, _) = self.exchange(stream, 1, Some(3), &[])?;
        }
        bail!("the target did not enter the full feature phase")
    }
}

/// Answers NOP-In pings until the connection closes; then clears `alive`.
fn keep_alive(mut stream: TcpStream, cmdsn: u32, alive: Arc<AtomicBool>) {
    while let Ok((bhs, _data)) = read_pdu(&mut stream) {
        let opcode = bhs[0] & 0x3f;
        let ttt = u32::from_be_bytes([bhs[20], bhs[21], bhs[22], bhs[23]]);
        if opcode == 0x20 && ttt != 0xffff_ffff {
            let mut out = [0u8; 48];
            out[0] = 0x40; // immediate NOP-Out
            out[1] = 0x80;
            out[8..16].copy_from_slice(&bhs[8..16]); // LUN
            out[16..20].copy_from_slice(&0xffff_ffffu32.to_be_bytes()); // ITT: reply only
            out[20..24].copy_from_slice(&bhs[20..24]); // TTT echoed
            out[24..28].copy_from_slice(&cmdsn.to_be_bytes());
            out[28..32].copy_from_slice(&bhs[24..28]); // ExpStatSN = its StatSN
            if write_pdu(&mut stream, &out, &[]).is_err() {
                break;
            }
        }
    }
    alive.store(false, Ordering::SeqCst);
}

fn write_pdu(stream: &mut TcpStream, bhs: &[u8; 48], data: &[u8]) -> Result<()> {
    let mut pdu = bhs.to_vec();
    pdu.extend_from_slice(data);
    while pdu.len() % 4 != 0 {
        pdu.push(0);
    }
    stream.write_all(&pdu)?;
    Ok(())
}

fn read_pdu(stream: &mut TcpStream) -> Result<([u8; 48], Vec<u8>)> {
    let mut bhs = [0u8; 48];
    stream.read_exact(&mut bhs)?;
    let ahs = usize::from(bhs[4]) * 4;
    let dlen = u32::from_be_bytes([0, bhs[5], bhs[6], bhs[7]]) as usize;
    let mut rest = vec![0u8; ahs + dlen.div_ceil(4) * 4];
    stream.read_exact(&mut rest)?;
    Ok((bhs, rest[ahs..ahs + dlen].to_vec()))
}

fn parse_keys(data: &[u8]) -> BTreeMap<String, String> {
    data.split(|&b| b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let text = String::from_utf8_lossy(kv);
            text.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn chap_md5(id: u8, secret: &str, challenge: &[u8]) -> Vec<u8> {
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret.as_bytes());
    h.update(challenge);
    h.finalize().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Result<Vec<u8>> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .ok_or_else(|| anyhow!("CHAP value {text:?} is not hex (0x...)"))?;
    if digits.len() % 2 != 0 {
        bail!("odd-length hex value {text:?}");
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|e| anyhow!("{text:?}: {e}")))
        .collect()
}
