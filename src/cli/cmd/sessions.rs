//! `isctl sessions [FIELD=VALUE...] [--fields F,..] [--order-by "F [asc|desc],..."]
//! [--max-records N] [--return-records false]`: the logged-in iSCSI sessions the
//! backend shows (LIO: ACL `info` and `param/`, TPG `dynamic_sessions`,
//! docs/configfs.md §6; the engine: its session registry and model), as ONTAP
//! shapes them (`observe::sessions`) and queried in ONTAP's language
//! (`observe::query`, shared with the exporter's HTTP endpoint).
//!
//! JSON is `{"num_records": N, "records": [...]}` with every field unless
//! `--fields` names some; text is a table of [`TABLE_FIELDS`] or the fields named.
//!
//! On LIO, `--model PATH` (else the model `isctl watch` last applied) names the
//! portal group, initiator groups and comment of each session
//! (`observe::admitted`); `source_with_model` is shared with the exporter.

use std::io::Write;
use std::path::Path;

use crate::cli::args::SessionsArgs;
use crate::cli::exit;
use crate::cli::resolve::Resolved;
use crate::cli::UsageError;
use crate::observe::admitted::{ModelFrom, ModelView, WithModel};
use crate::observe::query::{self, leaf_values, Fields, Filter, Query};
use crate::observe::sessions::{record, SCHEMA, TABLE_FIELDS};
use crate::observe::Source;

/// The backend's sessions and counters; on LIO, sessions completed from `model`
/// (loaded and validated like `plan` does, errors naming file and line) or else
/// from the watcher's last model. The engine names its sessions itself, so a
/// `--model` there is a usage error rather than silently ignored.
pub(crate) fn source_with_model(
    r: &Resolved,
    model: Option<&Path>,
) -> anyhow::Result<Box<dyn Source>> {
    let inner = r.observe_source()?;
    if !r.is_lio() {
        if let Some(path) = model {
            return Err(UsageError(format!(
                "--model {}: the userspace engine names sessions from the model it serves; --model is for LIO",
                path.display()
            ))
            .into());
        }
        return Ok(inner);
    }
    let from = match model {
        Some(path) => ModelFrom::Given(Box::new(ModelView::of(r.load_model(path)?, path)?)),
        None => ModelFrom::Watched {
            state_dir: r.state_dir.clone(),
        },
    };
    Ok(Box::new(WithModel { inner, from }))
}

/// The query the command line asks for.
fn query_of(args: &SessionsArgs, json: bool) -> Result<Query, UsageError> {
    let usage = |e: query::QueryError| UsageError(e.0);
    let mut filters = Vec::new();
    for f in &args.filters {
        let Some((k, v)) = f.split_once('=') else {
            return Err(UsageError(format!(
                "filter {f:?} is not FIELD=VALUE (for example initiator.name=*esx*)"
            )));
        };
        filters.push(Filter::parse(&SCHEMA, k, v).map_err(usage)?);
    }
    let fields = match &args.fields {
        Some(spec) => query::parse_fields(&SCHEMA, spec).map_err(usage)?,
        None if json => Fields::All,
        None => Fields::List(TABLE_FIELDS.iter().map(|s| s.to_string()).collect()),
    };
    Ok(Query {
        filters,
        fields,
        order_by: match &args.order_by {
            Some(o) => query::parse_order_by(&SCHEMA, o).map_err(usage)?,
            None => Vec::new(),
        },
        max_records: args.max_records,
        return_records: query::parse_bool("--return-records", &args.return_records)
            .map_err(usage)?,
    })
}

pub fn run(r: &Resolved, args: &SessionsArgs) -> anyhow::Result<u8> {
    r.text_or_json("sessions")?;
    let q = query_of(args, r.json())?;
    let all = source_with_model(r, args.model.as_deref())?.sessions()?;
    let answer = q.run(&SCHEMA, all.iter().map(record).collect());
    let mut out = std::io::stdout().lock();
    if r.json() {
        serde_json::to_writer_pretty(&mut out, &answer.to_json())?;
        writeln!(out)?;
        return Ok(exit::OK);
    }
    let Some(rows) = answer.records else {
        writeln!(out, "{}", answer.num_records)?;
        return Ok(exit::OK);
    };
    if rows.is_empty() {
        writeln!(out, "No sessions.")?;
        return Ok(exit::OK);
    }
    let columns: Vec<String> = match &q.fields {
        Fields::List(l) if args.fields.is_some() => {
            let mut c: Vec<String> = crate::observe::sessions::KEYS
                .iter()
                .map(|s| s.to_string())
                .collect();
            c.extend(
                l.iter()
                    .filter(|f| !c.contains(f))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            c
        }
        Fields::List(l) => l.clone(),
        _ => SCHEMA.fields.iter().map(|s| s.to_string()).collect(),
    };
    // A subtree name (`connections`) shows as its leaves.
    let columns: Vec<String> = columns
        .iter()
        .flat_map(|c| {
            let leaves: Vec<String> = SCHEMA
                .fields
                .iter()
                .filter(|f| *f == c || f.starts_with(&format!("{c}.")))
                .map(|f| f.to_string())
                .collect();
            leaves
        })
        .collect();
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|f| {
                    let v = leaf_values(row, f);
                    if v.is_empty() {
                        "-".into()
                    } else {
                        v.join(",")
                    }
                })
                .collect()
        })
        .collect();
    let heads: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].len())
                .chain([heads[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    for cells in std::iter::once(&heads).chain(table.iter()) {
        let line: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(exit::OK)
}
