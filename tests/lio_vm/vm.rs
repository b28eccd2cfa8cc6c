//! One QEMU VM running the LIO kernel, and the command channel to it.
//!
//! QEMU (TCG; KVM does not work on these machines) boots the kernel with the initramfs
//! from [`super::assets`]. Devices: a virtio NIC on QEMU's user network with `hostfwd`
//! from free host ports to guest ports (3260 always), a virtio-serial port named
//! `isctl.cmd` connected to a Unix socket this process listens on (the command channel),
//! a 9p share (`/mnt/host` in the guest) of the run directory's `share/`, and the serial
//! console written by QEMU straight to `console.log` (no pipe, so nothing is buffered).
//!
//! Command protocol (the guest side is tests/lio-vm/channel.sh, run by init.sh): the host sends
//! `<id> <base64 script>\n`; the guest runs it with `sh`, then answers `@@BEGIN <id>`,
//! base64 stdout, `@@STDERR <id>`, base64 stderr, `@@END <id> <status>`. One command at a
//! time, any number of round trips.
//!
//! Lifetime: [`Vm`]'s `Drop` kills QEMU (SIGKILL) and reaps it, also during a panic; QEMU
//! also gets SIGKILL if the thread that started it dies (`PR_SET_PDEATHSIG`). A command
//! that outlives its deadline marks the VM dead and returns an error. Run directories live
//! under `target/lio-vm/runs/<name>-<pid>-<n>/`; they are kept when the test fails (or
//! when `LIO_VM_KEEP=1`) and removed otherwise.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::assets::{self, progress};
use super::host::{free_port, require_tool};

/// Where the host share is mounted in the guest.
pub const GUEST_SHARE: &str = "/mnt/host";

/// Where the host's root is mounted in the guest when [`VmOptions::share_host_root`] is set.
pub const GUEST_HOST_ROOT: &str = "/host";

#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Names the run directory and the log lines.
    pub name: String,
    pub memory_mb: u32,
    /// Guest TCP ports forwarded from free host ports (3260 is always forwarded).
    pub forward_ports: Vec<u16>,
    pub boot_timeout: Duration,
    /// Default deadline of one command.
    pub command_timeout: Duration,
    /// Shares the host's `/` read-only into the guest (9p tag `hostroot`, mounted at
    /// [`GUEST_HOST_ROOT`]), so tests can run the host's own tools there with
    /// `in-host CMD...` (a chroot with tmpfs over the paths those tools write): open-iscsi,
    /// targetcli-fb, e2fsprogs, fio, systemd.
    pub share_host_root: bool,
    /// Boots the host's systemd as PID 1 instead of serving commands from the busybox
    /// `/init` (needs [`VmOptions::share_host_root`]): `/init` makes the overlay on the
    /// host's root the VM's root and `switch_root`s into `/lib/systemd/systemd`; the
    /// command channel runs as `lio-vm-channel.service` and its scripts run with the
    /// host's `/bin/sh` and tools (`host_sh` too, without a chroot). Before the switch this
    /// script runs there with `sh -e`, chrooted, as an administrator installs and enables
    /// units before a reboot; the static isctl and vmtool wait in `/usr/local/lib/lio-vm/`.
    pub systemd_setup: Option<String>,
}

impl VmOptions {
    pub fn new(name: &str) -> Self {
        let secs = |var: &str, default: u64| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        VmOptions {
            name: name.to_string(),
            memory_mb: 1024,
            forward_ports: vec![3260],
            boot_timeout: Duration::from_secs(secs("LIO_VM_BOOT_TIMEOUT", 180)),
            command_timeout: Duration::from_secs(secs("LIO_VM_COMMAND_TIMEOUT", 300)),
            share_host_root: false,
            systemd_setup: None,
        }
    }
}

/// What a command in the VM did.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub script: String,
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

impl std::fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "vm$ {}\n[exit {} after {:.2}s]\n--- stdout\n{}--- stderr\n{}",
            self.script.trim_end(),
            self.status,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

pub struct Vm {
    name: String,
    child: Child,
    run_dir: PathBuf,
    /// Holds the Unix socket's directory (short path: sun_path is 108 bytes).
    _sock_dir: tempfile::TempDir,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    ports: BTreeMap<u16, u16>,
    next_id: u64,
    command_timeout: Duration,
    started: Instant,
    boot_time: Duration,
    dead: Option<String>,
    pub kernel_version: String,
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Vm {
    /// Boots a VM with default options (1 GiB, port 3260 forwarded).
    pub fn boot(name: &str) -> Result<Vm> {
        Vm::boot_with(VmOptions::new(name))
    }

    pub fn boot_with(opts: VmOptions) -> Result<Vm> {
        let assets = assets::assets()?;
        let qemu = require_tool("qemu-system-x86_64")?;
        let n = RUN_COUNTER.fetch_add(1, Ordering::SeqCst);
        let run_dir =
            assets
                .cache_dir
                .join("runs")
                .join(format!("{}-{}-{n}", opts.name, std::process::id()));
        let _ = fs::remove_dir_all(&run_dir);
        fs::create_dir_all(run_dir.join("share"))
            .with_context(|| format!("creating {}", run_dir.display()))?;
        if let Some(setup) = &opts.systemd_setup {
            if !opts.share_host_root {
                bail!(
                    "VmOptions::systemd_setup boots the host's systemd: it needs share_host_root"
                );
            }
            if !Path::new("/lib/systemd/systemd").is_file() {
                bail!(
                    "VmOptions::systemd_setup boots the host's /lib/systemd/systemd, which is \
                     missing: install Debian's systemd package (tests/install-deps.sh does)"
                );
            }
            fs::write(run_dir.join("share/.lio-vm-setup.sh"), setup)
                .with_context(|| format!("writing the systemd setup into {}", run_dir.display()))?;
        }
        let mut last_err = None;
        // A forwarded port can be taken between choosing and QEMU binding it: retry.
        for _attempt in 0..4 {
            match Vm::try_boot(&opts, &qemu, &run_dir, assets) {
                Ok(vm) => return Ok(vm),
                Err(BootError::PortTaken(msg)) => last_err = Some(anyhow!(msg)),
                Err(BootError::Fatal(e)) => {
                    return Err(e.context(format!(
                        "booting the LIO test VM '{}' (logs in {})",
                        opts.name,
                        run_dir.display()
                    )))
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("no attempt made")))
    }

    fn try_boot(
        opts: &VmOptions,
        qemu: &Path,
        run_dir: &Path,
        assets: &assets::Assets,
    ) -> std::result::Result<Vm, BootError> {
        let mut ports = BTreeMap::new();
        let mut forwards = Vec::new();
        let mut guest_ports = opts.forward_ports.clone();
        if !guest_ports.contains(&3260) {
            guest_ports.insert(0, 3260);
        }
        for guest in guest_ports {
            let host = free_port().map_err(BootError::Fatal)?;
            ports.insert(guest, host);
            forwards.push(format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        let sock_dir = tempfile::Builder::new()
            .prefix("lio-vm-")
            .tempdir()
            .map_err(|e| BootError::Fatal(e.into()))?;
        let sock_path = sock_dir.path().join("cmd.sock");
        let listener = UnixListener::bind(&sock_path)
            .with_context(|| format!("binding {}", sock_path.display()))
            .map_err(BootError::Fatal)?;
        let console = run_dir.join("console.log");
        let stderr_path = run_dir.join("qemu.stderr");
        let stderr_file = fs::File::create(&stderr_path).map_err(|e| BootError::Fatal(e.into()))?;

        let mut cmd = Command::new(qemu);
        cmd.args([
            "-accel",
            "tcg",
            "-smp",
            "1",
            "-nodefaults",
            "-display",
            "none",
        ])
        .args(["-no-reboot", "-m", &opts.memory_mb.to_string()])
        .arg("-kernel")
        .arg(&assets.vmlinuz)
        .arg("-initrd")
        .arg(&assets.initramfs)
        .arg("-append")
        .arg(if opts.systemd_setup.is_some() {
            "console=ttyS0 quiet panic=-1 lio_vm.init=systemd systemd.unit=multi-user.target"
        } else {
            "console=ttyS0 quiet panic=-1"
        })
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-netdev")
        .arg(format!("user,id=n0{}", forwards.concat()))
        .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
        .args(["-device", "virtio-serial-pci"])
        .arg("-chardev")
        .arg(format!("socket,id=cmd,path={}", sock_path.display()))
        .args(["-device", "virtserialport,chardev=cmd,name=isctl.cmd"])
        .arg("-fsdev")
        .arg(format!(
            "local,id=share,path={},security_model=none",
            run_dir.join("share").display()
        ))
        .args(["-device", "virtio-9p-pci,fsdev=share,mount_tag=share"]);
        if opts.share_host_root {
            // multidevs=remap: the host's root spans several filesystems, whose inode
            // numbers would otherwise collide in the guest.
            cmd.args([
                "-fsdev",
                "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
                "-device",
                "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
            ]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe; it only asks the kernel to
        // SIGKILL QEMU if the spawning thread dies, so a killed test never leaks a VM.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        fs::write(run_dir.join("qemu.cmdline"), format!("{cmd:?}\n"))
            .map_err(|e| BootError::Fatal(e.into()))?;
        let started = Instant::now();
        let child = cmd
            .spawn()
            .context("starting qemu-system-x86_64")
            .map_err(BootError::Fatal)?;
        let mut guard = ChildGuard(Some(child));

        // QEMU connects to our socket while it starts up.
        listener
            .set_nonblocking(true)
            .map_err(|e| BootError::Fatal(e.into()))?;
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(BootError::Fatal(e.into())),
            }
            if let Some(status) = guard.try_wait() {
                let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
                if stderr.contains("host forwarding") {
                    return Err(BootError::PortTaken(stderr));
                }
                return Err(BootError::Fatal(anyhow!(
                    "QEMU exited at startup ({status}): {}",
                    stderr.trim()
                )));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(BootError::Fatal(anyhow!(
                    "QEMU did not connect its command channel within 30 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        stream
            .set_nonblocking(false)
            .map_err(|e| BootError::Fatal(e.into()))?;
        let writer = stream.try_clone().map_err(|e| BootError::Fatal(e.into()))?;
        let mut vm = Vm {
            name: opts.name.clone(),
            child: guard.0.take().expect("child present"),
            run_dir: run_dir.to_path_buf(),
            _sock_dir: sock_dir,
            reader: BufReader::new(stream),
            writer,
            ports,
            next_id: 1,
            command_timeout: opts.command_timeout,
            started,
            boot_time: Duration::ZERO,
            dead: None,
            kernel_version: assets.kernel_version.clone(),
        };
        let ready = vm
            .read_line_until(started + opts.boot_timeout)
            .and_then(|line| {
                line.strip_prefix("@@READY ")
                    .map(|v| v.trim().to_string())
                    .ok_or_else(|| anyhow!("unexpected first line from the VM: {line:?}"))
            });
        match ready {
            Ok(version) => {
                vm.boot_time = started.elapsed();
                progress(&format!(
                    "VM '{}' up in {:.1}s (kernel {version}, iSCSI on 127.0.0.1:{})",
                    vm.name,
                    vm.boot_time.as_secs_f64(),
                    vm.port()
                ));
                Ok(vm)
            }
            Err(e) => Err(BootError::Fatal(anyhow!(
                "the VM did not come up: {e:#}\n--- console (last lines)\n{}",
                vm.console_tail(40)
            ))),
        }
    }

    /// The host port forwarded to the guest's iSCSI port 3260.
    pub fn port(&self) -> u16 {
        self.ports[&3260]
    }

    /// The host port forwarded to `guest_port` (must be in [`VmOptions::forward_ports`]).
    pub fn host_port(&self, guest_port: u16) -> u16 {
        *self
            .ports
            .get(&guest_port)
            .unwrap_or_else(|| panic!("guest port {guest_port} is not forwarded"))
    }

    /// QEMU's process id (to check that it is gone after a drop).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// Writes `contents` into the share; returns the file's path inside the guest.
    pub fn put_file(&self, rel: &str, contents: &[u8]) -> Result<String> {
        let path = self.run_dir.join("share").join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(format!("{GUEST_SHARE}/{rel}"))
    }

    /// Reads a file the guest wrote into the share (`/mnt/host/<rel>`).
    pub fn get_file(&self, rel: &str) -> Result<Vec<u8>> {
        let path = self.run_dir.join("share").join(rel);
        fs::read(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// Host path of the share (`/mnt/host` in the guest).
    pub fn share_dir(&self) -> PathBuf {
        self.run_dir.join("share")
    }

    /// Runs a shell script in the VM (busybox sh, cwd /), with the default deadline.
    pub fn run(&mut self, script: &str) -> Result<CmdOutput> {
        self.run_timeout(script, self.command_timeout)
    }

    /// Runs a shell script with the host's own `/bin/sh` and tools, chrooted into the
    /// host's root (needs [`VmOptions::share_host_root`]); panics unless it exits 0.
    pub fn host_sh(&mut self, script: &str) -> CmdOutput {
        let out = self
            .run(&host_script(script))
            .unwrap_or_else(|e| panic!("running in VM '{}': {e:#}", self.name));
        assert!(out.success(), "command in VM '{}' failed\n{out}", self.name);
        out
    }

    /// [`Vm::host_sh`] that returns the output whatever the exit status.
    pub fn host_run(&mut self, script: &str) -> Result<CmdOutput> {
        self.run(&host_script(script))
    }

    /// Runs a script and panics (failing the test) unless it exits 0.
    pub fn sh(&mut self, script: &str) -> CmdOutput {
        let out = self
            .run(script)
            .unwrap_or_else(|e| panic!("running in VM '{}': {e:#}", self.name));
        assert!(out.success(), "command in VM '{}' failed\n{out}", self.name);
        out
    }

    pub fn run_timeout(&mut self, script: &str, timeout: Duration) -> Result<CmdOutput> {
        if let Some(why) = &self.dead {
            bail!("VM '{}' is unusable: {why}", self.name);
        }
        let id = self.next_id;
        self.next_id += 1;
        let start = Instant::now();
        let request = format!("{id} {}\n", base64_encode(script.as_bytes()));
        if let Err(e) = self.writer.write_all(request.as_bytes()) {
            return Err(self.fail(format!("sending command {id}: {e}")));
        }
        let deadline = start + timeout;
        let result = (|| -> Result<CmdOutput> {
            let begin = format!("@@BEGIN {id}");
            let line = self.read_line_until(deadline)?;
            if line != begin {
                // Anything else would be a desynchronised channel.
                bail!("expected {begin:?}, got {line:?}");
            }
            let stdout = self.read_block(deadline, &format!("@@STDERR {id}"))?;
            let stderr = self.read_block(deadline, "")?;
            Ok(CmdOutput {
                script: script.to_string(),
                status: stderr.1,
                stdout: String::from_utf8_lossy(&stdout.0).into_owned(),
                stderr: String::from_utf8_lossy(&stderr.0).into_owned(),
                elapsed: start.elapsed(),
            })
        })();
        result.map_err(|e| {
            self.fail(format!(
                "command {id} ({}): {e:#}",
                script.lines().next().unwrap_or_default()
            ))
        })
    }

    /// Reads base64 lines up to `end_marker` (or, when empty, up to `@@END <id> <status>`).
    /// Returns the decoded bytes and, for the END marker, the exit status.
    fn read_block(&mut self, deadline: Instant, end_marker: &str) -> Result<(Vec<u8>, i32)> {
        let mut b64 = String::new();
        loop {
            let line = self.read_line_until(deadline)?;
            if end_marker.is_empty() {
                if let Some(rest) = line.strip_prefix("@@END ") {
                    let status = rest
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| anyhow!("bad end marker {line:?}"))?;
                    return Ok((base64_decode(&b64)?, status));
                }
            } else if line == end_marker {
                return Ok((base64_decode(&b64)?, 0));
            }
            if line.starts_with("@@") {
                bail!("unexpected marker {line:?}");
            }
            b64.push_str(line.trim());
        }
    }

    fn read_line_until(&mut self, deadline: Instant) -> Result<String> {
        let mut line = Vec::new();
        loop {
            let now = Instant::now();
            if now >= deadline {
                bail!("timed out waiting for the VM");
            }
            let remaining = (deadline - now).min(Duration::from_secs(1));
            self.reader.get_ref().set_read_timeout(Some(remaining))?;
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => {
                    let status = self.child.try_wait().ok().flatten();
                    bail!(
                        "the VM closed its command channel (QEMU {})",
                        status.map_or("still running".to_string(), |s| s.to_string())
                    );
                }
                Ok(_) if line.ends_with(b"\n") => {
                    line.pop();
                    return String::from_utf8(line)
                        .map_err(|e| anyhow!("non-UTF-8 line from the VM: {e}"));
                }
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    // read_until keeps what it got so far in `line`; check QEMU is alive.
                    if let Ok(Some(status)) = self.child.try_wait() {
                        bail!("QEMU exited ({status})");
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn fail(&mut self, why: String) -> anyhow::Error {
        let msg = format!(
            "{why}\n--- console of VM '{}' (last lines; full log {})\n{}",
            self.name,
            self.run_dir.join("console.log").display(),
            self.console_tail(30)
        );
        self.dead = Some(why);
        let _ = self.child.kill();
        anyhow!(msg)
    }

    /// The last `n` lines of the VM's serial console.
    pub fn console_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.run_dir.join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The kernel log of the VM (`dmesg`), for failure messages.
    pub fn dmesg(&mut self) -> String {
        self.run_timeout("dmesg | tail -n 60", Duration::from_secs(30))
            .map(|o| o.stdout)
            .unwrap_or_else(|e| format!("(dmesg unavailable: {e:#})"))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let keep = std::thread::panicking()
            || self.dead.is_some()
            || std::env::var_os("LIO_VM_KEEP").is_some_and(|v| v != "0");
        let lifetime = self.started.elapsed();
        if keep {
            progress(&format!(
                "VM '{}' stopped after {:.1}s; its console log and share are kept in {}",
                self.name,
                lifetime.as_secs_f64(),
                self.run_dir.display()
            ));
        } else {
            progress(&format!(
                "VM '{}' stopped after {:.1}s (boot {:.1}s)",
                self.name,
                lifetime.as_secs_f64(),
                self.boot_time.as_secs_f64()
            ));
            let _ = fs::remove_dir_all(&self.run_dir);
        }
    }
}

/// A busybox script that runs `script` with the host's `/bin/sh` inside the host-root chroot.
fn host_script(script: &str) -> String {
    format!(
        "echo '{}' | base64 -d > /tmp/.host-script.sh\nin-host /bin/sh /tmp/.host-script.sh",
        base64_encode(script.as_bytes())
    )
}

enum BootError {
    PortTaken(String),
    Fatal(anyhow::Error),
}

/// Kills QEMU if booting fails before the [`Vm`] takes ownership of it.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// base64 (standard alphabet, padded), matching busybox `base64`/`base64 -d`.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' | b' ' => continue,
            _ => bail!("invalid base64 character {:?}", c as char),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}
