//! The real-kernel test bed: boots a Debian kernel with LIO under QEMU and lets a host
//! test drive it (docs/testing-lio-vm.md).
//!
//! Owns: fetching and caching the kernel and its modules ([`assets`]), building static
//! isctl + vmtool and packing the initramfs ([`assets`]), the VM process and its command
//! channel ([`vm`]), host-side initiator tools with timeouts ([`host`]), an iSCSI session
//! holder written from RFC 7143 ([`holder`]), configfs tree dumps ([`tree`]), running isctl
//! in the VM with a kernel-side count of configfs operations ([`isctl`]), model-derived
//! expectations of the tree and of what initiators see ([`expect`]), the simulator as a
//! mirror given the same applies ([`mirror`]) and the recorded-transcript replay
//! ([`transcript`]).
//! Does not own: what the tests assert (tests/lio_vm.rs, tests/systemd_vm.rs), the VM's
//! /init (tests/lio-vm/init.sh), its command channel (tests/lio-vm/channel.sh) or the
//! VM-side helper (tests/lio-vm/vmtool).
//!
//! In: the repository's own files plus Debian packages (qemu-system-x86, busybox-static,
//! kmod, dpkg, libiscsi-bin, qemu-utils). Out: a running [`vm::Vm`] that is always killed
//! when dropped, also on panic and timeout.
//!
//! Shared by the test crate `tests/lio_vm.rs` and the benchmark `benches/lio_vm.rs`; each
//! uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod assets;
pub mod expect;
pub mod holder;
pub mod host;
pub mod isctl;
pub mod mirror;
pub mod transcript;
pub mod tree;
pub mod vm;

pub use host::{require_tool, run_host, HostOutput};
pub use tree::TreeDump;
pub use vm::{CmdOutput, Vm, VmOptions};

/// The configfs root inside the VM.
pub const CONFIGFS: &str = "/sys/kernel/config/target";
