//! The validated model: what `model::load` returns and every other part consumes.
//!
//! These types are the contract between the TOML front end and the rest of isctl
//! (lowering to a backend state, the userspace engine). Every value here has passed
//! validation: names parse, references resolve, sizes have units applied, defaults are
//! filled in (portal tags, serials). Each object remembers where it was defined
//! ([`Origin`]) so that a later stage (a backend that cannot honour a feature, say) can
//! still point the user at the file and line.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use super::names::IscsiName;
use super::secret::Secret;

/// Where an object (or value) was written: file, 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Origin {
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// A whole model: one file or a directory of files, merged and validated.
///
/// Maps are keyed by the object's name as written in the model (its TOML key),
/// except `targets`, which is keyed by the target's full iSCSI name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Model {
    pub global: Global,
    pub portals: BTreeMap<String, PortalGroup>,
    pub initiator_groups: BTreeMap<String, InitiatorGroup>,
    pub auths: BTreeMap<String, ChapCredentials>,
    pub extents: BTreeMap<String, Extent>,
    pub targets: BTreeMap<IscsiName, Target>,
}

/// `[global]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Global {
    /// Prefix for targets named without `iqn.`/`eui.`/`naa.`: `<basename>:<key>`.
    pub basename: Option<String>,
    /// iSNS servers, `host` or `host:port`, as written.
    pub isns_servers: Vec<String>,
    pub alua: bool,
    pub origin: Option<Origin>,
}

/// How a login (or a discovery session) must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum AuthMethod {
    #[default]
    None,
    /// The initiator proves itself with CHAP.
    Chap,
    /// CHAP both ways: the target proves itself too (needs `peer_user`).
    MutualChap,
}

impl AuthMethod {
    /// The spelling used in the model.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Chap => "chap",
            AuthMethod::MutualChap => "mutual-chap",
        }
    }
}

/// `[portal.<name>]`: a portal group (target portal group tag + listen addresses).
#[derive(Debug, Clone, PartialEq)]
pub struct PortalGroup {
    pub name: String,
    /// Target portal group tag, 1..=65535 (explicit or assigned deterministically).
    pub tag: u16,
    /// Listen addresses, port filled in (3260 when omitted). Never both `0.0.0.0:P`
    /// and `[::]:P` (validation refuses that: LIO treats them as one portal).
    pub listen: Vec<SocketAddr>,
    pub discovery_auth: AuthMethod,
    /// Name of an `[auth.*]`; `Some` exactly when `discovery_auth != None`.
    pub discovery_auth_group: Option<String>,
    pub comment: String,
    pub origin: Origin,
}

/// `[initiator_group.<name>]`: who may log in. Empty lists mean "anyone".
#[derive(Debug, Clone, PartialEq)]
pub struct InitiatorGroup {
    pub name: String,
    pub initiators: Vec<IscsiName>,
    pub networks: Vec<IpNet>,
    pub comment: String,
    pub origin: Origin,
}

impl InitiatorGroup {
    /// True when the group admits any initiator name.
    pub fn any_initiator(&self) -> bool {
        self.initiators.is_empty()
    }
    /// True when the group admits any network address.
    pub fn any_network(&self) -> bool {
        self.networks.is_empty()
    }
    /// Does the group admit `initiator` connecting from `ip`? An IPv4-mapped IPv6
    /// address (from a dual-stack listener) counts as the IPv4 address it carries.
    pub fn admits(&self, initiator: &str, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        (self.any_initiator() || self.initiators.iter().any(|n| n.as_str() == initiator))
            && (self.any_network() || self.networks.iter().any(|n| n.contains(&ip)))
    }
}

/// `[auth.<name>]`: CHAP credentials, secrets already resolved from
/// `secret` / `secret_file` / `secret_env`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChapCredentials {
    pub name: String,
    /// The name the initiator presents (CHAP_N it must send).
    pub user: String,
    pub secret: Secret,
    /// Mutual CHAP: the target's own name and secret.
    pub peer: Option<PeerCredentials>,
    pub origin: Origin,
}

/// The target's side of mutual CHAP.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerCredentials {
    pub user: String,
    pub secret: Secret,
}

/// `[extent.<name>]`: a logical unit's storage.
#[derive(Debug, Clone, PartialEq)]
pub struct Extent {
    pub name: String,
    pub backing: Backing,
    /// Logical block size: 512, 1024, 2048 or 4096.
    pub blocksize: u32,
    /// T10 unit serial (VPD 0x80). Given, or derived from the name (stable across runs).
    pub serial: String,
    /// NAA identifier as written (`0x` + 16 or 32 hex digits), lower-cased.
    pub naa: Option<String>,
    pub readonly: bool,
    pub rpm: Rpm,
    pub comment: String,
    /// `false`: defined but not exported (its LUNs are not presented).
    pub enabled: bool,
    /// May be mapped by more than one target.
    pub shared: bool,
    /// Write-back caching: writes are acknowledged from the host's page cache and reach
    /// the medium on SYNCHRONIZE CACHE or FUA (initiators see a volatile write cache).
    /// `false` (the default): every write reaches the medium before it is acknowledged.
    /// LIO: fileio `fd_buffered_io=1` (targetcli's default). File and block extents.
    pub write_back: bool,
    /// The extent's name is its INQUIRY product identification (the first 15 characters),
    /// instead of the backend's generic one. LIO: `attrib/emulate_model_alias = 1`, which
    /// targetcli sets on every storage object it creates (`export_backstore_name_as_model`).
    pub model_alias: bool,
    pub origin: Origin,
}

/// Where an extent's blocks live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A regular file. `size` is required when the file does not exist yet; it is
    /// created sparse and may grow, never shrink. `None`: use the file's current size.
    File { path: PathBuf, size: Option<u64> },
    /// A block device (its size is the device's).
    Block { device: PathBuf },
    /// Memory, lost when the target stops.
    Ramdisk { size: u64 },
}

impl Backing {
    /// The model's spelling of the extent type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Backing::File { .. } => "file",
            Backing::Block { .. } => "block",
            Backing::Ramdisk { .. } => "ramdisk",
        }
    }
}

/// Rotation rate reported to initiators (VPD 0xB1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rpm {
    /// Non-rotating medium.
    Ssd,
    #[default]
    Unknown,
    /// 5400, 7200, 10000 or 15000.
    Rpm(u16),
}

/// `[target.<key>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The TOML key as written (`target0`, or a full name).
    pub key: String,
    /// Full iSCSI name: the key if it starts with iqn./eui./naa., else `<basename>:<key>`.
    pub name: IscsiName,
    pub alias: Option<String>,
    /// LUN id (0..=16383) → extent name.
    pub luns: BTreeMap<u16, String>,
    /// One per portal group the target is reachable through (at least one).
    pub groups: Vec<TargetGroup>,
    pub origin: Origin,
}

impl Model {
    /// Does `group` (of a target of this model) admit `initiator` connecting from
    /// `ip`? No initiator group means anyone; a group the model does not define
    /// admits no one.
    pub fn admits(&self, group: &TargetGroup, initiator: &str, ip: std::net::IpAddr) -> bool {
        match &group.initiator_group {
            None => true,
            Some(name) => self
                .initiator_groups
                .get(name)
                .is_some_and(|ig| ig.admits(initiator, ip)),
        }
    }
}

/// `[[target.<key>.group]]`: reachability of a target through one portal group.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetGroup {
    /// A `[portal.*]` name.
    pub portal: String,
    /// A `[initiator_group.*]` name; `None` = any initiator.
    pub initiator_group: Option<String>,
    /// An `[auth.*]` name; `None` = no CHAP.
    pub auth: Option<String>,
    /// Defaults to `Chap` when `auth` is set, else `None`.
    pub auth_method: AuthMethod,
    /// `chap = "optional"`: the group's CHAP credentials are used when an initiator offers
    /// CHAP, and an initiator offering only `AuthMethod=None` logs in without it (LIO: the
    /// ACLs carry the credentials, the TPG's `attrib/authentication = 0`; what targetcli
    /// leaves after `set auth` on an ACL). `false` (the default): CHAP is required.
    pub chap_optional: bool,
    pub origin: Origin,
}
