//! ONTAP's REST query language over JSON records, pure (no I/O), shared by
//! `isctl sessions` and the exporter's `GET /api/protocols/san/iscsi/sessions`.
//!
//! What ONTAP documents, and what this implements:
//! * a filter on any field, named by its dotted path (`initiator.name`,
//!   `connections.initiator_address.address`); a path through an array matches
//!   when any element matches;
//! * a filter value is one or more alternatives joined by `|` (OR); each is an
//!   exact value, a pattern with `*` wildcards, a comparison `<N`, `>N`, `<=N`,
//!   `>=N`, a range `A..B` (inclusive), or `null` (the field is absent); `!`
//!   before any of them negates it. Strings compare without regard to case, as
//!   ONTAP does; values that are both numbers compare as numbers;
//! * `fields=a,b.c` selects fields (keeping their nesting), `fields=*` all of
//!   them; without it a record has only its key fields;
//! * `order_by=F [asc|desc],G ...` sorts on several fields;
//! * `max_records=N` returns at most N records; `return_records=false` returns
//!   only `num_records`, the count of matching records.
//!
//! Does not: know what a session is. The caller gives the field paths that exist
//! ([`Schema`]) so that an unknown name is an error that lists the right ones.

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// Why a query is not valid; the message names the parameter and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

/// The fields records can have (dotted leaf paths, arrays written without `[]`)
/// and the key fields a record shows when no `fields` are asked for.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    pub fields: &'static [&'static str],
    pub keys: &'static [&'static str],
}

impl Schema {
    /// `path` names a leaf or a subtree (`connections`, `initiator`).
    fn knows(&self, path: &str) -> bool {
        self.fields.iter().any(|f| {
            *f == path
                || f.strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    fn check(&self, what: &str, path: &str) -> Result<(), QueryError> {
        if self.knows(path) {
            Ok(())
        } else {
            Err(QueryError(format!(
                "{what}: unknown field {path:?}; fields are: {}",
                self.fields.join(", ")
            )))
        }
    }
}

/// Which fields a record shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fields {
    /// The schema's key fields only (ONTAP's default).
    #[default]
    Keys,
    /// `fields=*`.
    All,
    List(Vec<String>),
}

/// One sort key of `order_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    pub field: String,
    pub descending: bool,
}

/// One term of a filter value (between `|`).
#[derive(Debug, Clone, PartialEq)]
enum Test {
    Equal(String),
    Pattern(String),
    Less(String),
    LessOrEqual(String),
    Greater(String),
    GreaterOrEqual(String),
    Range(String, String),
    Null,
}

#[derive(Debug, Clone, PartialEq)]
struct Term {
    negated: bool,
    test: Test,
}

/// `field=value` with its value parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub field: String,
    terms: Vec<Term>,
}

/// A whole query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    pub filters: Vec<Filter>,
    pub fields: Fields,
    pub order_by: Vec<OrderBy>,
    pub max_records: Option<usize>,
    pub return_records: bool,
}

/// What a query answers: `{"num_records": N, "records": [...]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub num_records: usize,
    /// `None` with `return_records=false`.
    pub records: Option<Vec<Value>>,
}

impl Answer {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("num_records".into(), Value::from(self.num_records));
        if let Some(r) = &self.records {
            m.insert("records".into(), Value::Array(r.clone()));
        }
        Value::Object(m)
    }
}

impl Filter {
    /// Parse ONTAP's value syntax for `field`.
    pub fn parse(schema: &Schema, field: &str, value: &str) -> Result<Filter, QueryError> {
        schema.check("filter", field)?;
        let terms = value
            .split('|')
            .map(|alt| {
                let (negated, rest) = match alt.strip_prefix('!') {
                    Some(r) => (true, r),
                    None => (false, alt),
                };
                let test = if rest.eq_ignore_ascii_case("null") {
                    Test::Null
                } else if let Some(v) = rest.strip_prefix("<=") {
                    Test::LessOrEqual(v.into())
                } else if let Some(v) = rest.strip_prefix(">=") {
                    Test::GreaterOrEqual(v.into())
                } else if let Some(v) = rest.strip_prefix('<') {
                    Test::Less(v.into())
                } else if let Some(v) = rest.strip_prefix('>') {
                    Test::Greater(v.into())
                } else if let Some((a, b)) = rest.split_once("..") {
                    Test::Range(a.into(), b.into())
                } else if rest.contains('*') {
                    Test::Pattern(rest.into())
                } else {
                    Test::Equal(rest.into())
                };
                Term { negated, test }
            })
            .collect();
        Ok(Filter {
            field: field.into(),
            terms,
        })
    }

    /// True when the record matches: some alternative holds for some value of the
    /// field (a negated alternative holds when no value satisfies its test).
    pub fn matches(&self, record: &Value) -> bool {
        let values = leaf_values(record, &self.field);
        self.terms.iter().any(|t| {
            let hit = match &t.test {
                Test::Null => values.is_empty(),
                test => values.iter().any(|v| holds(test, v)),
            };
            hit != t.negated
        })
    }
}

/// Parse `order_by`: `F [asc|desc]`, comma-separated.
pub fn parse_order_by(schema: &Schema, spec: &str) -> Result<Vec<OrderBy>, QueryError> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|part| {
            let mut words = part.split_whitespace();
            let field = words.next().unwrap_or_default().to_string();
            schema.check("order_by", &field)?;
            let descending = match words.next().map(|w| w.to_ascii_lowercase()) {
                None => false,
                Some(w) if w == "asc" => false,
                Some(w) if w == "desc" => true,
                Some(w) => {
                    return Err(QueryError(format!(
                        "order_by: {w:?} after {field:?} is neither asc nor desc"
                    )))
                }
            };
            if words.next().is_some() {
                return Err(QueryError(format!(
                    "order_by: {part:?} is not \"FIELD [asc|desc]\""
                )));
            }
            Ok(OrderBy { field, descending })
        })
        .collect()
}

/// Parse `fields`: `*` or comma-separated dotted paths.
pub fn parse_fields(schema: &Schema, spec: &str) -> Result<Fields, QueryError> {
    let list: Vec<String> = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if list.iter().any(|f| f == "*") {
        return Ok(Fields::All);
    }
    for f in &list {
        schema.check("fields", f)?;
    }
    Ok(if list.is_empty() {
        Fields::Keys
    } else {
        Fields::List(list)
    })
}

/// Parse `return_records` (`true` or `false`).
pub fn parse_bool(name: &str, v: &str) -> Result<bool, QueryError> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(QueryError(format!(
            "{name}: {v:?} is neither true nor false"
        ))),
    }
}

impl Query {
    /// A query from URL parameters (already percent-decoded), as the exporter's
    /// endpoint receives them; every name but ONTAP's control parameters is a filter.
    pub fn from_params<'a>(
        schema: &Schema,
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Query, QueryError> {
        let mut q = Query {
            return_records: true,
            ..Query::default()
        };
        for (k, v) in params {
            match k {
                "fields" => q.fields = parse_fields(schema, v)?,
                "order_by" => q.order_by.extend(parse_order_by(schema, v)?),
                "max_records" => {
                    q.max_records = Some(v.parse().map_err(|_| {
                        QueryError(format!("max_records: {v:?} is not a whole number"))
                    })?)
                }
                "return_records" => q.return_records = parse_bool(k, v)?,
                // Accepted for ONTAP clients; answers are never deferred here.
                "return_timeout" => {}
                field => q.filters.push(Filter::parse(schema, field, v)?),
            }
        }
        Ok(q)
    }

    /// Filter, sort, cut and project `records`.
    pub fn run(&self, schema: &Schema, records: Vec<Value>) -> Answer {
        let mut rows: Vec<Value> = records
            .into_iter()
            .filter(|r| self.filters.iter().all(|f| f.matches(r)))
            .collect();
        if !self.order_by.is_empty() {
            rows.sort_by(|a, b| {
                for o in &self.order_by {
                    let ord = compare_first(a, b, &o.field);
                    let ord = if o.descending { ord.reverse() } else { ord };
                    if ord != Ordering::Equal {
                        return ord;
                    }
                }
                Ordering::Equal
            });
        }
        if let Some(n) = self.max_records {
            rows.truncate(n);
        }
        if !self.return_records {
            return Answer {
                num_records: rows.len(),
                records: None,
            };
        }
        let records: Vec<Value> = match &self.fields {
            Fields::All => rows,
            Fields::Keys => {
                let keys: Vec<String> = schema.keys.iter().map(|s| s.to_string()).collect();
                rows.iter().map(|r| project(r, &keys)).collect()
            }
            Fields::List(list) => {
                // ONTAP returns the key fields as well as the ones asked for.
                let mut all: Vec<String> = schema.keys.iter().map(|s| s.to_string()).collect();
                all.extend(list.iter().cloned());
                rows.iter().map(|r| project(r, &all)).collect()
            }
        };
        Answer {
            num_records: records.len(),
            records: Some(records),
        }
    }
}

/// Every scalar value at `path` (through arrays), as strings; nulls are absent.
pub fn leaf_values(record: &Value, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    collect(
        record,
        path.split('.').collect::<Vec<_>>().as_slice(),
        &mut out,
    );
    out
}

fn collect(v: &Value, path: &[&str], out: &mut Vec<String>) {
    match v {
        Value::Array(items) => {
            for i in items {
                collect(i, path, out);
            }
        }
        Value::Object(m) => {
            if let Some((first, rest)) = path.split_first() {
                if let Some(next) = m.get(*first) {
                    collect(next, rest, out);
                }
            }
        }
        Value::Null => {}
        Value::String(s) if path.is_empty() => out.push(s.clone()),
        other if path.is_empty() => out.push(other.to_string()),
        _ => {}
    }
}

fn compare_values(a: &str, b: &str) -> Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.to_lowercase().cmp(&b.to_lowercase()),
    }
}

/// Records without the field sort last.
fn compare_first(a: &Value, b: &Value, field: &str) -> Ordering {
    match (
        leaf_values(a, field).into_iter().next(),
        leaf_values(b, field).into_iter().next(),
    ) {
        (Some(x), Some(y)) => compare_values(&x, &y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

fn holds(test: &Test, v: &str) -> bool {
    match test {
        Test::Equal(x) => compare_values(v, x) == Ordering::Equal,
        Test::Pattern(p) => glob(&p.to_lowercase(), &v.to_lowercase()),
        Test::Less(x) => compare_values(v, x) == Ordering::Less,
        Test::LessOrEqual(x) => compare_values(v, x) != Ordering::Greater,
        Test::Greater(x) => compare_values(v, x) == Ordering::Greater,
        Test::GreaterOrEqual(x) => compare_values(v, x) != Ordering::Less,
        Test::Range(lo, hi) => {
            compare_values(v, lo) != Ordering::Less && compare_values(v, hi) != Ordering::Greater
        }
        Test::Null => false,
    }
}

/// `*` matches any run of characters.
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    if !s.ends_with(last) {
        return false;
    }
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The parts of `record` named by `paths`, nesting (and arrays) kept.
pub fn project(record: &Value, paths: &[String]) -> Value {
    let mut out = Value::Object(Map::new());
    for p in paths {
        let segs: Vec<&str> = p.split('.').collect();
        merge_path(record, &segs, &mut out);
    }
    out
}

fn merge_path(src: &Value, path: &[&str], dst: &mut Value) {
    let Some((first, rest)) = path.split_first() else {
        *dst = src.clone();
        return;
    };
    let (Value::Object(s), Value::Object(d)) = (src, &mut *dst) else {
        return;
    };
    let Some(child) = s.get(*first) else {
        return;
    };
    match child {
        Value::Array(items) if !rest.is_empty() => {
            let slot = d.entry(first.to_string()).or_insert_with(|| {
                Value::Array(items.iter().map(|_| Value::Object(Map::new())).collect())
            });
            if let Value::Array(outs) = slot {
                for (item, o) in items.iter().zip(outs.iter_mut()) {
                    merge_path(item, rest, o);
                }
            }
        }
        _ if rest.is_empty() => {
            d.insert(first.to_string(), child.clone());
        }
        Value::Object(_) => {
            let slot = d
                .entry(first.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            merge_path(child, rest, slot);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCHEMA: Schema = Schema {
        fields: &[
            "name",
            "tsih",
            "initiator.name",
            "initiator.alias",
            "connections.cid",
            "connections.initiator_address.address",
        ],
        keys: &["tsih"],
    };

    fn rows() -> Vec<Value> {
        vec![
            json!({"name": "a", "tsih": 3, "initiator": {"name": "iqn.1994-05.com.redhat:host1", "alias": "web"},
                   "connections": [{"cid": 0, "initiator_address": {"address": "10.0.0.1"}},
                                   {"cid": 1, "initiator_address": {"address": "10.0.0.2"}}]}),
            json!({"name": "b", "tsih": 10, "initiator": {"name": "iqn.1998-01.com.vmware:esx1"},
                   "connections": [{"cid": 0, "initiator_address": {"address": "192.168.1.5"}}]}),
            json!({"name": "c", "tsih": 7, "initiator": {"name": "iqn.1994-05.com.redhat:host2", "alias": "db"},
                   "connections": []}),
        ]
    }

    fn names(q: &Query) -> Vec<String> {
        let all = Query {
            fields: Fields::All,
            ..q.clone()
        };
        all.run(&SCHEMA, rows())
            .records
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn query(params: &[(&str, &str)]) -> Query {
        Query::from_params(&SCHEMA, params.iter().copied()).unwrap()
    }

    #[test]
    fn filters_on_dotted_names_with_wildcards_case_insensitively() {
        assert_eq!(names(&query(&[("initiator.name", "*REDHAT*")])), ["a", "c"]);
        assert_eq!(
            names(&query(&[("initiator.name", "iqn.1998-01.com.vmware:esx1")])),
            ["b"]
        );
    }

    #[test]
    fn a_filter_through_an_array_matches_any_element() {
        assert_eq!(
            names(&query(&[(
                "connections.initiator_address.address",
                "10.0.0.2"
            )])),
            ["a"]
        );
        assert_eq!(names(&query(&[("connections.cid", "1")])), ["a"]);
    }

    #[test]
    fn or_not_and_comparisons() {
        assert_eq!(names(&query(&[("name", "a|c")])), ["a", "c"]);
        assert_eq!(names(&query(&[("name", "!a")])), ["b", "c"]);
        assert_eq!(names(&query(&[("tsih", ">5")])), ["b", "c"]);
        assert_eq!(names(&query(&[("tsih", ">=7")])), ["b", "c"]);
        assert_eq!(names(&query(&[("tsih", "<7")])), ["a"]);
        assert_eq!(names(&query(&[("tsih", "<=7")])), ["a", "c"]);
        assert_eq!(names(&query(&[("tsih", "3..7")])), ["a", "c"]);
        // numbers compare as numbers: 10 > 7 although "10" < "7" as text
        assert_eq!(names(&query(&[("tsih", ">9")])), ["b"]);
    }

    #[test]
    fn null_matches_an_absent_field_and_not_null_a_present_one() {
        assert_eq!(names(&query(&[("initiator.alias", "null")])), ["b"]);
        assert_eq!(names(&query(&[("initiator.alias", "!null")])), ["a", "c"]);
    }

    #[test]
    fn several_filters_must_all_hold() {
        assert_eq!(
            names(&query(&[("initiator.name", "*redhat*"), ("tsih", ">5")])),
            ["c"]
        );
    }

    #[test]
    fn orders_on_several_fields_each_asc_or_desc() {
        assert_eq!(names(&query(&[("order_by", "tsih desc")])), ["b", "c", "a"]);
        assert_eq!(names(&query(&[("order_by", "tsih")])), ["a", "c", "b"]);
        // records without an alias sort last, then by tsih descending among equals
        assert_eq!(
            names(&query(&[("order_by", "initiator.alias asc,tsih desc")])),
            ["c", "a", "b"]
        );
    }

    #[test]
    fn max_records_cuts_after_sorting() {
        assert_eq!(
            names(&query(&[("order_by", "tsih desc"), ("max_records", "2")])),
            ["b", "c"]
        );
    }

    #[test]
    fn return_records_false_counts_only() {
        let a = query(&[("return_records", "false"), ("initiator.name", "*redhat*")])
            .run(&SCHEMA, rows());
        assert_eq!(a.num_records, 2);
        assert_eq!(a.to_json(), json!({"num_records": 2}));
    }

    #[test]
    fn default_fields_are_the_keys_and_fields_keep_nesting() {
        let a = query(&[("name", "a")]).run(&SCHEMA, rows());
        assert_eq!(
            a.to_json(),
            json!({"num_records": 1, "records": [{"tsih": 3}]})
        );
        let a = query(&[("name", "a"), ("fields", "initiator.alias,connections.cid")])
            .run(&SCHEMA, rows());
        assert_eq!(
            a.records.unwrap()[0],
            json!({"tsih": 3, "initiator": {"alias": "web"}, "connections": [{"cid": 0}, {"cid": 1}]})
        );
        let a = query(&[("name", "b"), ("fields", "*")]).run(&SCHEMA, rows());
        assert_eq!(a.records.unwrap()[0], rows()[1]);
    }

    #[test]
    fn rejects_unknown_fields_naming_the_known_ones() {
        let e = Query::from_params(&SCHEMA, [("initiator.nme", "x")]).unwrap_err();
        assert!(e.0.contains("unknown field \"initiator.nme\""), "{e}");
        assert!(e.0.contains("initiator.name"), "{e}");
        assert!(Query::from_params(&SCHEMA, [("fields", "bogus")]).is_err());
        assert!(Query::from_params(&SCHEMA, [("order_by", "tsih sideways")]).is_err());
        assert!(Query::from_params(&SCHEMA, [("max_records", "-1")]).is_err());
        assert!(Query::from_params(&SCHEMA, [("return_records", "maybe")]).is_err());
        // a subtree is a known name
        assert!(Query::from_params(&SCHEMA, [("fields", "connections")]).is_ok());
    }

    #[test]
    fn globs() {
        assert!(glob("iqn.*:client1", "iqn.1994-05.com.example:client1"));
        assert!(glob("*", "x"));
        assert!(glob("abc", "abc"));
        assert!(!glob("abc", "abcd"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c*e", "abcdf"));
        assert!(!glob("ab*ba", "aba"));
    }
}
