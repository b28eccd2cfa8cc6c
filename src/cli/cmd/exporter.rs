//! `isctl exporter [--listen 127.0.0.1:9287] [--allow-remote]`: serve
//! `observe::exporter` (GET /metrics, GET /api/protocols/san/iscsi/sessions) until
//! stopped. Loopback only unless `--allow-remote`: the endpoint has no
//! authentication. On LIO, sessions are named from `--model PATH` or the watcher's
//! last model (`cli::cmd::sessions::source_with_model`).

use crate::cli::args::ExporterArgs;
use crate::cli::resolve::Resolved;
use crate::cli::UsageError;
use crate::observe::exporter::Exporter;

pub fn run(r: &Resolved, args: &ExporterArgs) -> anyhow::Result<u8> {
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        return Err(UsageError(format!(
            "--listen {}: not a loopback address; the endpoint has no authentication, so pass --allow-remote to serve it there",
            args.listen
        ))
        .into());
    }
    let source = super::sessions::source_with_model(r, args.model.as_deref())?;
    let exporter = Exporter::new(source, r.state_dir.clone());
    let server = tiny_http::Server::http(args.listen)
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", args.listen))?;
    tracing::info!(listen = %args.listen, "serving /metrics and /api/protocols/san/iscsi/sessions");
    exporter.serve(&server);
    Ok(crate::cli::exit::OK)
}
