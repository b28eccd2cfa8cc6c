//! The typed state shared by the desired side (lowered from the model) and the
//! observed side (read from a backend), so that `plan::diff` compares like with like.
//!
//! Owns: the [`State`] types (backstores, targets → TPGs → portals / LUNs / ACLs →
//! mapped LUNs, discovery auth), object identities ([`ObjectId`]) used by plans and the
//! ledger, and lowering a validated [`Model`](crate::model::Model) into a desired
//! state ([`lower`](fn@lower)), including every "the kernel target cannot express this" error.
//! Does not: read or write anything. Observing is the backends' job
//! (`backend::lio::observe`), comparing is `plan::diff`'s.
//! In: a `Model` (lower) or a backend's reading. Out: a `State`.
//!
//! The shape follows what LIO holds (the only kernel backend), with backend-neutral
//! names. Fields that only an observation can fill (the HBA a backstore lives in, a
//! symlink's name, a portal directory as the kernel spells it, values isctl does not
//! manage) are `Option`s or live in `extra`, so that export can say precisely what a
//! model cannot express and the plan can show it.

pub mod export;
pub mod lower;
pub mod observed;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::{Origin, Secret};

pub use lower::{lower, LowerError, LowerErrors};
pub use observed::{
    Connection, DeviceFact, FileFact, HostFacts, Observed, Session, SessionParameters,
};

/// The IEEE company id LIO gives every new storage object (OpenFabrics, 00 14 05).
pub const DEFAULT_COMPANY_ID: u32 = 0x001405;
/// The TPG `param/TargetAlias` LIO gives every new TPG.
pub const DEFAULT_TARGET_ALIAS: &str = "LIO Target";
/// Bytes per LIO ramdisk page (`rd_pages` counts these).
pub const RAMDISK_PAGE: u64 = 4096;

/// A whole configuration, desired or observed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct State {
    /// Storage objects by name (the model's extent name).
    pub backstores: BTreeMap<String, Backstore>,
    /// Observed only: storage objects whose name repeats one in `backstores` but that
    /// live in another HBA. The model cannot name them; they are never desired.
    pub shadowed_backstores: Vec<Backstore>,
    /// Targets by iSCSI name (observed names are kept verbatim, even if not valid IQNs).
    pub targets: BTreeMap<String, Target>,
    /// Discovery (SendTargets) authentication, global in LIO. Desired: `None` when no
    /// portal of the model is used (then it is not managed). Observed: `None` when the
    /// iSCSI fabric directory does not exist.
    pub discovery: Option<DiscoveryAuth>,
    /// Observed: the iSCSI fabric directory exists. Desired: it is needed.
    pub fabric: bool,
    /// Observed only: every HBA directory under `core/` with the number of storage
    /// objects in it (empty HBAs included: their names are taken).
    pub hbas: BTreeMap<String, usize>,
    /// Observed things the typed state cannot hold (pscsi/user backstores, ALUA
    /// groups, non-canonical directory names, ...). Never desired.
    pub foreign: Vec<Foreign>,
}

/// Something observed that the typed state does not model, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Foreign {
    /// Configfs-relative path (e.g. `core/pscsi_0/ps0`).
    pub path: String,
    /// What it is, in words.
    pub what: String,
    /// The object it sits in, when it is inside one isctl knows (its deletion would
    /// have to remove this too).
    pub parent: Option<ObjectId>,
}

/// A storage object (LIO backstore) presented through LUNs.
#[derive(Debug, Clone, PartialEq)]
pub struct Backstore {
    pub name: String,
    pub kind: BackstoreKind,
    /// Logical block size (`attrib/block_size`).
    pub block_size: u32,
    /// T10 unit serial (`wwn/vpd_unit_serial`); empty when never set.
    pub serial: String,
    /// IEEE company id (`wwn/company_id`): with the serial's hex digits it makes the
    /// NAA designator.
    pub company_id: u32,
    /// `attrib/is_nonrot`. Desired `None`: not managed (the model says nothing).
    pub nonrotational: Option<bool>,
    /// LIO: the HBA directory (`fileio_3`). Observed only; the planner picks one for
    /// new backstores.
    pub hba: Option<String>,
    /// Observed: `enable` reads 1 (configured). Desired: always true.
    pub configured: bool,
    /// The policy attributes ([`POLICY_ATTRIBUTES`]) whose value is not the kernel's
    /// default, by name (`emulate_tpu` → `1`). Desired: what the model asks for (empty:
    /// every one at its default). Observed: as read, in every scope. Any difference is
    /// drift, also for attributes the model does not name (docs/reconcile.md, "Drift").
    pub attributes: BTreeMap<String, String>,
    /// Observed values isctl does not manage but that differ from the kernel's
    /// defaults (e.g. `fd_async_io` → `1`, `attrib/unmap_zeroes_data` → `1`).
    pub extra: BTreeMap<String, String>,
    pub origin: Option<Origin>,
}

/// A storage object's policy attribute (`attrib/<name>`): a switch whose kernel default
/// is the same for every backstore kind and device, so that a different value was put
/// there by someone and is drift unless the model asks for it (docs/configfs.md §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyAttribute {
    pub name: &'static str,
    /// The value after enable on every plugin isctl creates (fileio, iblock, rd_mcp).
    pub default: &'static str,
    /// The kernel refuses a change while a LUN links the object (EINVAL, §2.4 "L"), so
    /// changing it on a linked object replaces the object.
    pub frozen_while_linked: bool,
}

/// The attributes isctl keeps at the model's value or the kernel default. Left out on
/// purpose (docs/reconcile.md, "Drift"): values the kernel derives from the backend or
/// device (`hw_*`, `block_size` (a model key), `queue_depth`, `optimal_sectors`,
/// `emulate_write_cache`, `is_nonrot` (the model's `rpm`), `unmap_zeroes_data`,
/// `max_unmap_*`, `unmap_granularity*`, `max_write_same_len`, `pi_prot_*`), and the
/// obsolete `emulate_dpo`/`emulate_fua_read` (writes are ignored).
pub const POLICY_ATTRIBUTES: &[PolicyAttribute] = &[
    PolicyAttribute {
        name: "emulate_3pc",
        default: "1",
        frozen_while_linked: false,
    },
    PolicyAttribute {
        name: "emulate_caw",
        default: "1",
        frozen_while_linked: false,
    },
    PolicyAttribute {
        name: "emulate_fua_write",
        default: "1",
        frozen_while_linked: false,
    },
    PolicyAttribute {
        name: "emulate_model_alias",
        default: "0",
        frozen_while_linked: true,
    },
    PolicyAttribute {
        name: "emulate_pr",
        default: "1",
        frozen_while_linked: false,
    },
    PolicyAttribute {
        name: "emulate_tas",
        default: "1",
        frozen_while_linked: true,
    },
    PolicyAttribute {
        name: "emulate_tpu",
        default: "0",
        frozen_while_linked: false,
    },
    PolicyAttribute {
        name: "emulate_tpws",
        default: "0",
        frozen_while_linked: false,
    },
    PolicyAttribute {
        name: "emulate_ua_intlck_ctrl",
        default: "0",
        frozen_while_linked: true,
    },
    PolicyAttribute {
        name: "enforce_pr_isids",
        default: "1",
        frozen_while_linked: false,
    },
    PolicyAttribute {
        name: "force_pr_aptpl",
        default: "0",
        frozen_while_linked: true,
    },
];

/// The policy attribute called `name`.
pub fn policy_attribute(name: &str) -> Option<&'static PolicyAttribute> {
    POLICY_ATTRIBUTES.iter().find(|a| a.name == name)
}

/// A TPG or ACL file under the drift rule: isctl keeps it at the kernel default (the
/// model names none of them), so any other value was put there behind isctl's back.
/// The kernel accepts a new value at any time (it applies to new logins and
/// connections), so a repair is one write in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultedAttribute {
    /// The path under the TPG or ACL directory (`attrib/login_timeout`, `param/MaxConnections`).
    pub path: &'static str,
    /// The value right after `mkdir`, as read back without its newline; the same in
    /// every mainline kernel (docs/configfs.md §3.3, §3.4, §3.6).
    pub default: &'static str,
}

const fn defaulted(path: &'static str, default: &'static str) -> DefaultedAttribute {
    DefaultedAttribute { path, default }
}

impl DefaultedAttribute {
    /// Its value in a TPG's or ACL's `attributes` map, which lists only the values that
    /// are not the default.
    pub fn value_in<'m>(&self, attributes: &'m BTreeMap<String, String>) -> &'m str {
        attributes
            .get(self.path)
            .map_or(self.default, String::as_str)
    }
}

/// TPG attributes and parameters under the drift rule (`TA_*` defaults in
/// `iscsi_target_core.h`, `INITIAL_*` in `iscsi_target_parameters.h`). Left out on
/// purpose (docs/reconcile.md, "Drift"): what isctl writes from the model
/// (`authentication`, `generate_node_acls`, `demo_mode_write_protect`, `TargetAlias`),
/// what follows another value (`cache_dynamic_acls`, `AuthMethod`), `default_cmdsn_depth`
/// (`TA_DEFAULT_CMDSN_DEPTH` was 16 in the pre-mainline LIO code, 64 in mainline), `prod_mode_write_protect`
/// (isctl writes every mapping's `write_protect` itself), the protection-information pair
/// `t10_pi`/`fabric_prot_type` (follows the hardware), `tpg_enabled_sendtargets`, and
/// the marker keys (`IFMarker`, `OFMarker`, `IFMarkInt`, `OFMarkInt`: LIO implements no
/// markers, RFC 7143 dropped them).
pub const TPG_DEFAULTED: &[DefaultedAttribute] = &[
    defaulted("attrib/default_erl", "0"),
    defaulted("attrib/demo_mode_discovery", "1"),
    defaulted("attrib/login_keys_workaround", "1"),
    defaulted("attrib/login_timeout", "15"),
    defaulted("attrib/netif_timeout", "2"),
    defaulted("param/DataDigest", "CRC32C,None"),
    defaulted("param/DataPDUInOrder", "Yes"),
    defaulted("param/DataSequenceInOrder", "Yes"),
    defaulted("param/DefaultTime2Retain", "20"),
    defaulted("param/DefaultTime2Wait", "2"),
    defaulted("param/ErrorRecoveryLevel", "0"),
    defaulted("param/FirstBurstLength", "65536"),
    defaulted("param/HeaderDigest", "CRC32C,None"),
    defaulted("param/ImmediateData", "Yes"),
    defaulted("param/InitialR2T", "Yes"),
    defaulted("param/MaxBurstLength", "262144"),
    defaulted("param/MaxConnections", "1"),
    defaulted("param/MaxOutstandingR2T", "1"),
    defaulted("param/MaxRecvDataSegmentLength", "8192"),
    defaulted("param/MaxXmitDataSegmentLength", "262144"),
];

/// ACL attributes under the drift rule (`NA_*` defaults in `iscsi_target_core.h`).
/// Left out: `attrib/authentication` (written from the model) and `cmdsn_depth` (its
/// default is the TPG's `default_cmdsn_depth`, which differs across kernels, and a
/// write cuts the initiator's session).
pub const ACL_DEFAULTED: &[DefaultedAttribute] = &[
    defaulted("attrib/dataout_timeout", "3"),
    defaulted("attrib/dataout_timeout_retries", "5"),
    defaulted("attrib/default_erl", "0"),
    defaulted("attrib/nopin_response_timeout", "30"),
    defaulted("attrib/nopin_timeout", "15"),
    defaulted("attrib/random_datain_pdu_offsets", "0"),
    defaulted("attrib/random_datain_seq_offsets", "0"),
    defaulted("attrib/random_r2t_offsets", "0"),
];

/// What a backstore stores its blocks in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackstoreKind {
    /// A regular file (LIO fileio). `size` is `fd_dev_size`; desired `None` means "the
    /// file's current size" (resolved by the planner from host facts).
    ///
    /// `write_back`: fileio `fd_buffered_io=1` (page-cache writes, volatile write cache
    /// reported to initiators). Fixed when the object is enabled.
    File {
        path: PathBuf,
        size: Option<u64>,
        write_back: bool,
    },
    /// A block device (LIO iblock). `readonly` is fixed when the object is enabled.
    Block { device: PathBuf, readonly: bool },
    /// Memory (LIO rd_mcp), `size` in bytes (a multiple of [`RAMDISK_PAGE`]).
    Ramdisk { size: u64 },
    /// Observed only: a plugin the model has no extent type for (pscsi, user).
    Other { plugin: String },
}

impl BackstoreKind {
    /// The LIO plugin (HBA name prefix) for this kind.
    pub fn plugin(&self) -> &str {
        match self {
            BackstoreKind::File { .. } => "fileio",
            BackstoreKind::Block { .. } => "iblock",
            BackstoreKind::Ramdisk { .. } => "rd_mcp",
            BackstoreKind::Other { plugin } => plugin,
        }
    }
    /// The model's word for this kind.
    pub fn type_name(&self) -> &str {
        match self {
            BackstoreKind::File { .. } => "file",
            BackstoreKind::Block { .. } => "block",
            BackstoreKind::Ramdisk { .. } => "ramdisk",
            BackstoreKind::Other { plugin } => plugin,
        }
    }
}

/// A target (LIO `iscsi/<iqn>`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Target {
    pub name: String,
    pub tpgs: BTreeMap<u16, Tpg>,
    pub origin: Option<Origin>,
}

/// A target portal group (LIO `tpgt_<tag>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Tpg {
    pub tag: u16,
    /// `enable`.
    pub enabled: bool,
    /// `param/TargetAlias` ([`DEFAULT_TARGET_ALIAS`] when the model gives none).
    pub alias: String,
    /// `attrib/authentication`: CHAP required (for dynamic sessions and for ACLs that
    /// inherit).
    pub authentication: bool,
    /// `attrib/generate_node_acls`: demo mode, any initiator may log in.
    pub generate_node_acls: bool,
    /// `attrib/demo_mode_write_protect`. Desired `None`: not managed (no demo mode).
    pub demo_mode_write_protect: Option<bool>,
    /// Observed only: `attrib/prod_mode_write_protect` (decides the initial
    /// `write_protect` of new mappings).
    pub prod_mode_write_protect: Option<bool>,
    /// TPG CHAP credentials (used by dynamic sessions). Desired `None`: not managed.
    pub auth: Option<ChapCreds>,
    /// Portals by canonical socket address.
    pub portals: BTreeMap<SocketAddr, Portal>,
    /// LUNs by LUN number.
    pub luns: BTreeMap<u64, Lun>,
    /// Node ACLs by initiator name (verbatim: LIO compares names byte-wise).
    pub acls: BTreeMap<String, Acl>,
    /// The TPG's defaulted attributes ([`TPG_DEFAULTED`]) whose value is not the kernel's
    /// default, by path (`attrib/login_timeout` → `30`). Desired: empty (the model names
    /// none of them). Observed: as read, in every scope. Any difference is drift
    /// (docs/reconcile.md, "Drift").
    pub attributes: BTreeMap<String, String>,
    /// Observed: unmanaged attribute values that differ from the kernel defaults.
    pub extra: BTreeMap<String, String>,
    pub origin: Option<Origin>,
}

impl Tpg {
    /// A TPG as `mkdir` creates it: the kernel's defaults (docs/configfs.md §3.3).
    pub fn fresh(tag: u16) -> Tpg {
        Tpg {
            tag,
            enabled: false,
            alias: DEFAULT_TARGET_ALIAS.to_string(),
            authentication: true,
            generate_node_acls: false,
            demo_mode_write_protect: Some(true),
            prod_mode_write_protect: Some(false),
            auth: Some(ChapCreds::default()),
            portals: BTreeMap::new(),
            luns: BTreeMap::new(),
            acls: BTreeMap::new(),
            attributes: BTreeMap::new(),
            extra: BTreeMap::new(),
            origin: None,
        }
    }
}

/// A network portal (LIO `np/<addr>:<port>`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Portal {
    /// Observed: the directory name as the kernel keeps it (`[::0]:3260`).
    pub dir: Option<String>,
}

/// A TPG LUN (LIO `lun/lun_<N>` with its symlink to a backstore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lun {
    /// The backstore it presents; `None` when the directory has no link.
    pub backstore: Option<BackstoreRef>,
    /// Observed: the symlink's name.
    pub link: Option<String>,
}

/// Which backstore a LUN links to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackstoreRef {
    pub name: String,
    /// Observed: the HBA of the linked object (to tell shadowed duplicates apart).
    pub hba: Option<String>,
}

/// A node ACL: one initiator's access to a TPG.
#[derive(Debug, Clone, PartialEq)]
pub struct Acl {
    /// CHAP credentials of this ACL (`auth/`). Desired: always `Some` (empty = none).
    pub auth: Option<ChapCreds>,
    /// `attrib/authentication`: `None` inherits the TPG's (-1, the default).
    pub authentication: Option<bool>,
    /// Mapped LUNs by the LUN number the initiator sees.
    pub mapped: BTreeMap<u64, MappedLun>,
    /// The ACL's defaulted attributes ([`ACL_DEFAULTED`]) whose value is not the kernel's
    /// default, by path (`attrib/nopin_timeout` → `5`); like [`Tpg::attributes`].
    pub attributes: BTreeMap<String, String>,
    /// Observed: unmanaged values (`tag`, `cmdsn_depth`, attributes) that differ from
    /// the defaults.
    pub extra: BTreeMap<String, String>,
    pub origin: Option<Origin>,
}

/// An ACL's mapped LUN (LIO `acls/<I>/lun_<M>` → `lun/lun_<N>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedLun {
    /// The TPG LUN it maps; `None` when the directory has no link.
    pub tpg_lun: Option<u64>,
    /// `write_protect`; observed `None` when the mapping is dead (its TPG LUN lost its
    /// backstore link: the file reads empty, docs/configfs.md §4.2).
    pub write_protect: Option<bool>,
    /// Observed: the symlink's name.
    pub link: Option<String>,
}

/// CHAP credentials as LIO stores them: empty strings mean "not set".
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ChapCreds {
    pub userid: String,
    pub password: Secret,
    pub userid_mutual: String,
    pub password_mutual: Secret,
}

impl fmt::Debug for ChapCreds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChapCreds")
            .field("userid", &self.userid)
            .field("password", &self.password)
            .field("userid_mutual", &self.userid_mutual)
            .field("password_mutual", &self.password_mutual)
            .finish()
    }
}

impl ChapCreds {
    pub fn is_empty(&self) -> bool {
        self.userid.is_empty()
            && self.password.expose().is_empty()
            && self.userid_mutual.is_empty()
            && self.password_mutual.expose().is_empty()
    }
    /// The value of one field.
    pub fn get(&self, field: AuthField) -> AuthValue {
        match field {
            AuthField::UserId => AuthValue::Plain(self.userid.clone()),
            AuthField::Password => AuthValue::Secret(self.password.clone()),
            AuthField::UserIdMutual => AuthValue::Plain(self.userid_mutual.clone()),
            AuthField::PasswordMutual => AuthValue::Secret(self.password_mutual.clone()),
        }
    }
}

/// One of the four CHAP files of an `auth/` directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthField {
    UserId,
    Password,
    UserIdMutual,
    PasswordMutual,
}

impl AuthField {
    pub const ALL: [AuthField; 4] = [
        AuthField::UserId,
        AuthField::Password,
        AuthField::UserIdMutual,
        AuthField::PasswordMutual,
    ];
    /// The configfs file name.
    pub fn file(self) -> &'static str {
        match self {
            AuthField::UserId => "userid",
            AuthField::Password => "password",
            AuthField::UserIdMutual => "userid_mutual",
            AuthField::PasswordMutual => "password_mutual",
        }
    }
    pub fn is_secret(self) -> bool {
        matches!(self, AuthField::Password | AuthField::PasswordMutual)
    }
}

/// A CHAP field value: user names print, secrets never do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthValue {
    Plain(String),
    Secret(Secret),
}

impl AuthValue {
    /// The bytes to write (never with a trailing newline, docs/configfs.md §3.5).
    pub fn expose(&self) -> &str {
        match self {
            AuthValue::Plain(s) => s,
            AuthValue::Secret(s) => s.expose(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl fmt::Display for AuthValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthValue::Plain(s) if s.is_empty() => f.write_str("(unset)"),
            AuthValue::Plain(s) => write!(f, "{s:?}"),
            AuthValue::Secret(s) if s.expose().is_empty() => f.write_str("(unset)"),
            AuthValue::Secret(s) => write!(f, "{s}"),
        }
    }
}

/// Discovery (SendTargets) authentication (`iscsi/discovery_auth/`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiscoveryAuth {
    /// `enforce_discovery_auth`.
    pub enforce: bool,
    /// The credentials. Desired: empty when `enforce` is false and then not compared
    /// (left as they are).
    pub creds: ChapCreds,
}

/// The identity of one object of the state: what plans, the ledger and status talk
/// about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ObjectId {
    Backstore {
        name: String,
    },
    DiscoveryAuth,
    Target {
        target: String,
    },
    Tpg {
        target: String,
        tag: u16,
    },
    Portal {
        target: String,
        tag: u16,
        portal: SocketAddr,
    },
    Lun {
        target: String,
        tag: u16,
        lun: u64,
    },
    Acl {
        target: String,
        tag: u16,
        initiator: String,
    },
    MappedLun {
        target: String,
        tag: u16,
        initiator: String,
        lun: u64,
    },
    /// A portal group of the userspace engine (its listening addresses, tag and
    /// discovery authentication). LIO has no such object: its portals live in TPGs.
    PortalGroup {
        name: String,
    },
}

impl ObjectId {
    /// The kind as one word (`backstore`, `mapped_lun`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            ObjectId::Backstore { .. } => "backstore",
            ObjectId::DiscoveryAuth => "discovery_auth",
            ObjectId::Target { .. } => "target",
            ObjectId::Tpg { .. } => "tpg",
            ObjectId::Portal { .. } => "portal",
            ObjectId::Lun { .. } => "lun",
            ObjectId::Acl { .. } => "acl",
            ObjectId::MappedLun { .. } => "mapped_lun",
            ObjectId::PortalGroup { .. } => "portal_group",
        }
    }

    /// The target this object belongs to, if any.
    pub fn target(&self) -> Option<&str> {
        match self {
            ObjectId::Backstore { .. } | ObjectId::DiscoveryAuth | ObjectId::PortalGroup { .. } => {
                None
            }
            ObjectId::Target { target }
            | ObjectId::Tpg { target, .. }
            | ObjectId::Portal { target, .. }
            | ObjectId::Lun { target, .. }
            | ObjectId::Acl { target, .. }
            | ObjectId::MappedLun { target, .. } => Some(target),
        }
    }

    /// True when `self` is `other` or lies inside it.
    pub fn is_within(&self, other: &ObjectId) -> bool {
        if self == other {
            return true;
        }
        match (self, other) {
            (_, ObjectId::Target { target }) => self.target() == Some(target.as_str()),
            (
                ObjectId::Portal { target, tag, .. }
                | ObjectId::Lun { target, tag, .. }
                | ObjectId::Acl { target, tag, .. }
                | ObjectId::MappedLun { target, tag, .. },
                ObjectId::Tpg {
                    target: t2,
                    tag: g2,
                },
            ) => target == t2 && tag == g2,
            (
                ObjectId::MappedLun {
                    target,
                    tag,
                    initiator,
                    ..
                },
                ObjectId::Acl {
                    target: t2,
                    tag: g2,
                    initiator: i2,
                },
            ) => target == t2 && tag == g2 && initiator == i2,
            _ => false,
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectId::Backstore { name } => write!(f, "backstore {name:?}"),
            ObjectId::DiscoveryAuth => f.write_str("discovery_auth"),
            ObjectId::Target { target } => write!(f, "target {target:?}"),
            ObjectId::Tpg { target, tag } => write!(f, "target {target:?} tpg {tag}"),
            ObjectId::Portal {
                target,
                tag,
                portal,
            } => write!(f, "target {target:?} tpg {tag} portal {portal}"),
            ObjectId::Lun { target, tag, lun } => {
                write!(f, "target {target:?} tpg {tag} lun {lun}")
            }
            ObjectId::Acl {
                target,
                tag,
                initiator,
            } => write!(f, "target {target:?} tpg {tag} acl {initiator:?}"),
            ObjectId::MappedLun {
                target,
                tag,
                initiator,
                lun,
            } => write!(
                f,
                "target {target:?} tpg {tag} acl {initiator:?} mapped_lun {lun}"
            ),
            ObjectId::PortalGroup { name } => write!(f, "portal_group {name:?}"),
        }
    }
}

impl State {
    /// Every object of this state, parents before children.
    pub fn object_ids(&self) -> Vec<ObjectId> {
        let mut ids = Vec::new();
        for name in self.backstores.keys() {
            ids.push(ObjectId::Backstore { name: name.clone() });
        }
        if self.discovery.is_some() {
            ids.push(ObjectId::DiscoveryAuth);
        }
        for (tname, t) in &self.targets {
            ids.push(ObjectId::Target {
                target: tname.clone(),
            });
            for (tag, tpg) in &t.tpgs {
                ids.extend(tpg_object_ids(tname, *tag, tpg));
            }
        }
        ids
    }

    /// Number of LUN links (from any target) to the backstore `name` in HBA `hba`
    /// (`hba` `None`: any HBA).
    pub fn links_to(&self, name: &str, hba: Option<&str>) -> Vec<ObjectId> {
        let mut out = Vec::new();
        for (tname, t) in &self.targets {
            for (tag, tpg) in &t.tpgs {
                for (id, lun) in &tpg.luns {
                    if let Some(b) = &lun.backstore {
                        if b.name == name && (hba.is_none() || b.hba.as_deref() == hba) {
                            out.push(ObjectId::Lun {
                                target: tname.clone(),
                                tag: *tag,
                                lun: *id,
                            });
                        }
                    }
                }
            }
        }
        out
    }
}

/// The ids of a TPG and everything in it, parents first.
pub fn tpg_object_ids(target: &str, tag: u16, tpg: &Tpg) -> Vec<ObjectId> {
    let mut ids = vec![ObjectId::Tpg {
        target: target.to_string(),
        tag,
    }];
    for addr in tpg.portals.keys() {
        ids.push(ObjectId::Portal {
            target: target.to_string(),
            tag,
            portal: *addr,
        });
    }
    for lun in tpg.luns.keys() {
        ids.push(ObjectId::Lun {
            target: target.to_string(),
            tag,
            lun: *lun,
        });
    }
    for (init, acl) in &tpg.acls {
        ids.push(ObjectId::Acl {
            target: target.to_string(),
            tag,
            initiator: init.clone(),
        });
        for m in acl.mapped.keys() {
            ids.push(ObjectId::MappedLun {
                target: target.to_string(),
                tag,
                initiator: init.clone(),
                lun: *m,
            });
        }
    }
    ids
}

/// The LIO portal directory name for a socket address: `a.b.c.d:port` or
/// `[v6]:port` (docs/configfs.md §3.1).
pub fn portal_dir_name(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// Parse a portal directory name as the kernel accepts it, canonicalising the
/// address (`[::0]:3260` → `[::]:3260`, docs/configfs.md §3.1/§8). `None` when it does
/// not parse (a `%scope` with an interface name, say).
pub fn parse_portal_dir(name: &str) -> Option<SocketAddr> {
    name.parse::<SocketAddr>().ok()
}

/// Two portals that LIO treats as the same listener within one target: equal, or
/// both wildcards on the same port (`0.0.0.0:P` and `[::]:P`, docs/configfs.md §3.2).
pub fn portals_conflict(a: &SocketAddr, b: &SocketAddr) -> bool {
    a == b || (a.port() == b.port() && a.ip().is_unspecified() && b.ip().is_unspecified())
}

/// The NAA designator (32 hex digits, NAA type 6) LIO derives from a company id and
/// a unit serial: `6`, the 24-bit company id, then the first 25 hex digits of the
/// serial with non-hex characters skipped, zero-padded (kernel
/// `spc_gen_naa_6h_vendor_specific`, docs/configfs.md §2.3).
pub fn lio_naa(company_id: u32, serial: &str) -> String {
    let mut s = format!("6{:06x}", company_id & 0xff_ffff);
    let digits: String = serial
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(25)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    s.push_str(&digits);
    while s.len() < 32 {
        s.push('0');
    }
    s
}

/// The managed attributes of every object, rendered as strings (secrets excluded:
/// only whether a CHAP user is set), for recording what an apply set and spotting
/// drift later without the model. Absent keys are not managed.
pub fn managed_attributes(s: &State) -> BTreeMap<ObjectId, BTreeMap<String, String>> {
    let mut out: BTreeMap<ObjectId, BTreeMap<String, String>> = BTreeMap::new();
    for id in s.object_ids() {
        out.insert(id, BTreeMap::new());
    }
    let mut put = |id: ObjectId, k: &str, v: String| {
        out.entry(id).or_default().insert(k.to_string(), v);
    };
    for (name, b) in &s.backstores {
        let id = ObjectId::Backstore { name: name.clone() };
        put(id.clone(), "type", b.kind.type_name().to_string());
        match &b.kind {
            BackstoreKind::File {
                path,
                size,
                write_back,
            } => {
                put(id.clone(), "path", path.display().to_string());
                if let Some(sz) = size {
                    put(id.clone(), "size", sz.to_string());
                }
                put(id.clone(), "write_back", write_back.to_string());
            }
            BackstoreKind::Block { device, readonly } => {
                put(id.clone(), "device", device.display().to_string());
                put(id.clone(), "readonly", readonly.to_string());
            }
            BackstoreKind::Ramdisk { size } => put(id.clone(), "size", size.to_string()),
            BackstoreKind::Other { plugin } => put(id.clone(), "plugin", plugin.clone()),
        }
        put(id.clone(), "block_size", b.block_size.to_string());
        put(id.clone(), "serial", b.serial.clone());
        put(id.clone(), "company_id", format!("0x{:06x}", b.company_id));
        if let Some(n) = b.nonrotational {
            put(id.clone(), "nonrotational", n.to_string());
        }
        for a in POLICY_ATTRIBUTES {
            let v = b.attributes.get(a.name).map_or(a.default, String::as_str);
            put(id.clone(), &format!("attrib/{}", a.name), v.to_string());
        }
    }
    if let Some(d) = &s.discovery {
        put(ObjectId::DiscoveryAuth, "enforce", d.enforce.to_string());
        if d.enforce {
            put(
                ObjectId::DiscoveryAuth,
                "chap_userid",
                d.creds.userid.clone(),
            );
        }
    }
    for (tname, t) in &s.targets {
        for (tag, tpg) in &t.tpgs {
            let id = ObjectId::Tpg {
                target: tname.clone(),
                tag: *tag,
            };
            put(id.clone(), "enabled", tpg.enabled.to_string());
            put(id.clone(), "alias", tpg.alias.clone());
            put(id.clone(), "authentication", tpg.authentication.to_string());
            put(
                id.clone(),
                "generate_node_acls",
                tpg.generate_node_acls.to_string(),
            );
            if let Some(d) = tpg.demo_mode_write_protect {
                put(id.clone(), "demo_mode_write_protect", d.to_string());
            }
            if let Some(a) = &tpg.auth {
                put(id.clone(), "chap_userid", a.userid.clone());
                put(id.clone(), "chap_userid_mutual", a.userid_mutual.clone());
            }
            for a in TPG_DEFAULTED {
                put(id.clone(), a.path, a.value_in(&tpg.attributes).to_string());
            }
            for (l, lun) in &tpg.luns {
                let id = ObjectId::Lun {
                    target: tname.clone(),
                    tag: *tag,
                    lun: *l,
                };
                let b = lun
                    .backstore
                    .as_ref()
                    .map(|b| b.name.clone())
                    .unwrap_or_default();
                put(id, "backstore", b);
            }
            for (init, acl) in &tpg.acls {
                let id = ObjectId::Acl {
                    target: tname.clone(),
                    tag: *tag,
                    initiator: init.clone(),
                };
                let authn = match acl.authentication {
                    None => "inherit".to_string(),
                    Some(b) => b.to_string(),
                };
                put(id.clone(), "authentication", authn);
                if let Some(a) = &acl.auth {
                    put(id.clone(), "chap_userid", a.userid.clone());
                    put(id.clone(), "chap_userid_mutual", a.userid_mutual.clone());
                }
                for a in ACL_DEFAULTED {
                    put(id.clone(), a.path, a.value_in(&acl.attributes).to_string());
                }
                for (m, ml) in &acl.mapped {
                    let id = ObjectId::MappedLun {
                        target: tname.clone(),
                        tag: *tag,
                        initiator: init.clone(),
                        lun: *m,
                    };
                    put(
                        id.clone(),
                        "lun",
                        ml.tpg_lun.map(|x| x.to_string()).unwrap_or_default(),
                    );
                    put(
                        id,
                        "write_protect",
                        ml.write_protect.map(|x| x.to_string()).unwrap_or_default(),
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portal_dirs_canonicalise() {
        let a = parse_portal_dir("[::0]:3260").unwrap();
        assert_eq!(portal_dir_name(&a), "[::]:3260");
        let b = parse_portal_dir("0.0.0.0:3260").unwrap();
        assert_eq!(portal_dir_name(&b), "0.0.0.0:3260");
        assert!(portals_conflict(&a, &b));
        let c = parse_portal_dir("10.0.0.1:3260").unwrap();
        assert!(!portals_conflict(&a, &c));
        assert!(parse_portal_dir("10.0.2.15").is_none());
    }

    #[test]
    fn naa_follows_the_kernel() {
        assert_eq!(
            lio_naa(0x001405, "3c6f4c3e-1111-4a8e-9c1d-0123456789ab"),
            "60014053c6f4c3e11114a8e9c1d01234"
        );
        assert_eq!(
            lio_naa(0xabcdef, "xyz"),
            format!("6abcdef{}", "0".repeat(25))
        );
    }

    #[test]
    fn object_containment() {
        let t = ObjectId::Target { target: "t".into() };
        let g = ObjectId::Tpg {
            target: "t".into(),
            tag: 1,
        };
        let m = ObjectId::MappedLun {
            target: "t".into(),
            tag: 1,
            initiator: "i".into(),
            lun: 0,
        };
        let a = ObjectId::Acl {
            target: "t".into(),
            tag: 1,
            initiator: "i".into(),
        };
        assert!(m.is_within(&t) && m.is_within(&g) && m.is_within(&a));
        assert!(!a.is_within(&m));
        assert!(!g.is_within(&ObjectId::Target { target: "u".into() }));
    }

    #[test]
    fn object_ids_serialise_stably() {
        let id = ObjectId::Portal {
            target: "iqn.2026-01.com.example:t".into(),
            tag: 1,
            portal: "[::]:3260".parse().unwrap(),
        };
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"portal","target":"iqn.2026-01.com.example:t","tag":1,"portal":"[::]:3260"}"#
        );
        let back: ObjectId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
    }
}
