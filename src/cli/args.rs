//! What the user typed: clap definitions of every command and option, no syscalls.
//!
//! Resolution (backend choice, output format, state dir, socket) happens once after
//! parsing, in `cli::resolve`, so that `--help` and usage errors never touch the system.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// isctl: declarative iSCSI target manager (Linux LIO via configfs, or a userspace engine).
#[derive(Debug, Parser)]
#[command(name = "isctl", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Which backend to manage: `lio` (kernel target through configfs), `userspace`
    /// (isctl's own engine, through its control socket), or `auto` (LIO when its configfs
    /// tree is present, else userspace).
    #[arg(long, global = true, value_enum, default_value_t = BackendChoice::Auto, env = "ISCTL_BACKEND")]
    pub backend: BackendChoice,

    /// Root of LIO's configfs tree.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/sys/kernel/config/target",
        env = "ISCTL_CONFIGFS_ROOT"
    )]
    pub configfs_root: PathBuf,

    /// Where isctl keeps its ledger of managed objects and its apply lock.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/var/lib/isctl",
        env = "ISCTL_STATE_DIR"
    )]
    pub state_dir: PathBuf,

    /// Control socket of the userspace engine (`isctl serve`) [default: /run/isctl/engine.sock
    /// for root, else $XDG_RUNTIME_DIR/isctl/engine.sock or /tmp/isctl-UID/engine.sock].
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value_os_t = default_socket(),
        hide_default_value = true,
        env = "ISCTL_SOCKET"
    )]
    pub socket: PathBuf,

    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Auto,
    Lio,
    Userspace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Toml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a model (file or directory) without touching the system.
    Validate(ValidateArgs),
    /// Show what `apply` would change.
    Plan(PlanArgs),
    /// Make the system match the model.
    Apply(ApplyArgs),
    /// Print the live configuration as a model (to adopt an existing host).
    Export(ExportArgs),
    /// Write a model from another target's configuration (tgt, ctld, TrueNAS, FreeNAS).
    Import(ImportArgs),
    /// What is applied, what is managed, what drifted.
    Status(StatusArgs),
    /// List logged-in iSCSI sessions (ONTAP's record shape and query language).
    Sessions(SessionsArgs),
    /// I/O and login statistics per target, LUN and initiator.
    Stats(StatsArgs),
    /// Serve /metrics (Prometheus) and ONTAP's sessions API over local HTTP, read-only.
    Exporter(ExporterArgs),
    /// Run the userspace iSCSI engine serving a model.
    Serve(ServeArgs),
    /// Prove a target works: discover, log in, ask (never read or write data), log out.
    Probe(Box<ProbeArgs>),
    /// Keep applying the model as it changes, and report (or repair) drift.
    Watch(WatchArgs),
    /// Write man pages and shell completions (for packaging).
    #[command(hide = true)]
    GenerateDocs(GenerateDocsArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Model file or directory of *.toml files.
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Model file or directory of *.toml files.
    pub path: PathBuf,
    /// Exit 0 when there is nothing to do, 2 when there are changes (1 on error).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Also plan deletion of live objects that isctl does not manage.
    #[arg(long)]
    pub prune: bool,
    /// Plan changes that cut logged-in sessions.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Model file or directory of *.toml files.
    pub path: PathBuf,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long)]
    pub auto_approve: bool,
    /// Delete live objects that are neither in the model nor managed by isctl.
    #[arg(long)]
    pub prune: bool,
    /// Allow changes that cut logged-in sessions.
    #[arg(long)]
    pub force: bool,
    /// Seconds to wait for another apply's lock (0: fail at once).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    pub lock_timeout: u64,
    /// After the apply (also a no-op one), log in to every target through every listen
    /// address as an initiator its group admits, with the model's CHAP, and compare what
    /// it shows with the model; `strict` also checks that a name outside the group and a
    /// wrong secret are refused. A failed check exits 6; nothing is rolled back.
    #[arg(long, value_enum, num_args = 0..=1, require_equals = true,
          default_missing_value = "normal", value_name = "LEVEL")]
    pub verify: Option<VerifyLevel>,
}

/// `apply --verify[=LEVEL]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyLevel {
    /// An admitted initiator logs in and sees what the model says.
    Normal,
    /// Also: a name outside the group is refused, a wrong CHAP secret fails.
    Strict,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write CHAP secrets into files in this directory (mode 0600) and reference them
    /// with `secret_file`; without it, secrets are referenced through `secret_env`
    /// variables and never printed.
    #[arg(long, value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Print CHAP secrets in clear text in the exported model.
    #[arg(long, conflicts_with = "secrets_dir")]
    pub show_secrets: bool,
}

/// The configuration formats `isctl import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportSource {
    /// tgt-admin's targets.conf (Linux tgt).
    Tgt,
    /// FreeBSD ctld's ctl.conf (classic syntax).
    Ctld,
    /// TrueNAS middleware query outputs (a directory of JSON files or one JSON file).
    Truenas,
    /// FreeNAS v1 REST API responses (a directory of JSON files or one JSON file).
    Freenas,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The format of the configuration to import.
    #[arg(value_enum)]
    pub source: ImportSource,
    /// What to import: the configuration file (tgt, ctld), or a directory of JSON files or
    /// one JSON file (truenas, freenas).
    pub path: PathBuf,
    /// Write a model directory instead of printing one file: `00-common.toml` (portal
    /// groups, initiator groups, auths, extents shared by several targets) and one file
    /// per target with its extents.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Write CHAP secrets into files in this directory (mode 0600) and reference them
    /// with `secret_file`; without it, secrets are referenced through `secret_env`
    /// variables and never printed.
    #[arg(long, value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Also compare the live state with this model and report drift.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Filters in ONTAP's query syntax on any field by its dotted name
    /// (`initiator.name=*esx*`, `tsih=>4`, `connections.authentication_type=chap|mutual_chap`,
    /// `initiator.alias=!null`); operators `*`, `!`, `|`, `<`, `>`, `<=`, `>=`, `A..B`.
    #[arg(value_name = "FIELD=VALUE")]
    pub filters: Vec<String>,
    /// Comma-separated fields to show (dotted names; `*` for all).
    #[arg(long, value_name = "F,...")]
    pub fields: Option<String>,
    /// Show at most this many sessions (after sorting).
    #[arg(long, value_name = "N")]
    pub max_records: Option<usize>,
    /// Sort by these fields, each optionally followed by `asc` or `desc`
    /// (`--order-by "initiator.name,tsih desc"`).
    #[arg(long, value_name = "F [asc|desc],...")]
    pub order_by: Option<String>,
    /// `false`: print only the number of matching sessions.
    #[arg(long, value_name = "BOOL", default_value = "true")]
    pub return_records: String,
    /// LIO: the model (file or directory) to name portal groups, initiator groups and
    /// their comments from (configfs has only tags and ACLs); default: the model
    /// `isctl watch` last applied (`<state-dir>/watch.json`), if any.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print again every SECS seconds, with per-second rates since the last sample.
    #[arg(long, value_name = "SECS")]
    pub watch: Option<f64>,
    /// With --watch: stop after N intervals (the first sample, then N with rates;
    /// default: until interrupted).
    #[arg(long, value_name = "N", requires = "watch")]
    pub count: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ExporterArgs {
    /// Address to serve HTTP on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9287")]
    pub listen: std::net::SocketAddr,
    /// Allow a non-loopback --listen address (the endpoint has no authentication:
    /// anyone who reaches it sees the sessions and counters).
    #[arg(long)]
    pub allow_remote: bool,
    /// LIO: the model (file or directory) to name portal groups, initiator groups and
    /// their comments from; default: the model `isctl watch` last applied, if any.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Model file or directory of *.toml files.
    pub path: PathBuf,
    /// Connections held before login, in total; when full, the oldest that has sent
    /// nothing is closed first.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_pending: u32,
    /// Connections held before login from one source address.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_pending_per_source: u32,
    /// Logins in progress at once (each holds a thread).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_logins: u32,
    /// Seconds from accept to a completed login (LIO: 15).
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub login_timeout: u64,
    /// Do not count per-command statistics (commands, bytes, latency) for `isctl stats`
    /// and the exporter; logins are still counted. For measuring their cost.
    #[arg(long)]
    pub no_stats: bool,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// `HOST[:PORT]` of a portal, or `iscsi://HOST[:PORT]/IQN[/LUN]`.
    pub portal: String,
    /// Log in to this target only (repeatable; default: every discovered target).
    #[arg(long = "target", value_name = "IQN")]
    pub targets: Vec<String>,
    /// Log in through every address discovery advertises, not only PORTAL.
    #[arg(long)]
    pub all_portals: bool,
    /// Initiator name [default: iqn.2026-11.io.isctl:probe, or with --model the first
    /// name of the target's initiator group].
    #[arg(long, value_name = "NAME")]
    pub initiator: Option<String>,
    /// ISID as 12 hex digits [default: 806973630001].
    #[arg(long, value_name = "HEX")]
    pub isid: Option<String>,
    /// Local address to connect from.
    #[arg(long, value_name = "ADDR")]
    pub source: Option<std::net::IpAddr>,
    /// CHAP user name for the targets.
    #[arg(long, value_name = "USER")]
    pub chap_user: Option<String>,
    /// Environment variable holding the CHAP secret.
    #[arg(long, value_name = "VAR", conflicts_with = "chap_secret_file")]
    pub chap_secret_env: Option<String>,
    /// File holding the CHAP secret (one line).
    #[arg(long, value_name = "PATH")]
    pub chap_secret_file: Option<PathBuf>,
    /// The target's CHAP name: asks for mutual CHAP and checks the target's answer.
    #[arg(long, value_name = "USER")]
    pub peer_user: Option<String>,
    /// Environment variable holding the target's (mutual CHAP) secret.
    #[arg(long, value_name = "VAR", conflicts_with = "peer_secret_file")]
    pub peer_secret_env: Option<String>,
    /// File holding the target's (mutual CHAP) secret.
    #[arg(long, value_name = "PATH")]
    pub peer_secret_file: Option<PathBuf>,
    /// Use the CHAP credentials for the discovery session too.
    #[arg(long)]
    pub discovery_chap: bool,
    /// CHAP algorithms to offer, in order of preference.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [ChapAlgorithm::Sha256, ChapAlgorithm::Sha1, ChapAlgorithm::Md5])]
    pub chap_algorithm: Vec<ChapAlgorithm>,
    /// Header digest to ask for.
    #[arg(long, value_enum, default_value_t = DigestChoice::None)]
    pub header_digest: DigestChoice,
    /// Data digest to ask for.
    #[arg(long, value_enum, default_value_t = DigestChoice::None)]
    pub data_digest: DigestChoice,
    /// Seconds to wait for a connection or an answer.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub timeout: u64,
    /// Compare what the target shows with this model (exit 2 when it differs); CHAP
    /// credentials and initiator names may come from it.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChapAlgorithm {
    Md5,
    Sha1,
    Sha256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DigestChoice {
    None,
    Crc32c,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Model file or directory of *.toml files.
    pub path: PathBuf,
    /// Milliseconds without a change to the model before applying it.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub debounce: u64,
    /// Seconds between drift checks (re-plans against the live state).
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: u64,
    /// Apply the plan when a drift check finds the live state differs from the model.
    #[arg(long)]
    pub repair: bool,
    /// Delete live objects that are neither in the model nor managed by isctl.
    #[arg(long)]
    pub prune: bool,
    /// Seconds to wait for another apply's lock.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub lock_timeout: u64,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct GenerateDocsArgs {
    /// Directory to write `man/*.1` and `completions/{isctl.bash,_isctl,isctl.fish}` into.
    pub out_dir: PathBuf,
}

/// The engine's control socket when `--socket` is not given: `/run/isctl/engine.sock`
/// for root (the systemd units), else `$XDG_RUNTIME_DIR/isctl/engine.sock` or
/// `/tmp/isctl-<uid>/engine.sock`, so that `isctl serve` runs without root and the
/// other commands of the same user find it.
pub fn default_socket() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/isctl/engine.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("isctl/engine.sock"),
        _ => PathBuf::from(format!("/tmp/isctl-{uid}/engine.sock")),
    }
}
