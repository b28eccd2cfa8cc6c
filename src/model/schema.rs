//! Typed access to one TOML table of the model, with `deny_unknown_fields` semantics.
//!
//! A [`Fields`] wraps one object's table (`[extent.lun0]`). Each getter names the key it
//! reads, checks the value's type (a wrong type is a diagnostic at the value) and
//! remembers the key as known; [`Fields::finish`] then reports every key nobody asked
//! for, at the key's own position, with a "did you mean" when a known key is close.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diag::Diags;
use super::load::SourceFile;
use super::suggest::closest;
use super::types::Origin;

/// A value read from the model, with the position of its value and of its key.
#[derive(Debug, Clone)]
pub(crate) struct Val<T> {
    pub v: T,
    pub at: Origin,
    pub key_at: Origin,
}

/// The keys of one table, read through typed getters.
pub(crate) struct Fields<'a, 'i> {
    pub src: &'a SourceFile,
    table: &'a DeTable<'i>,
    /// `kind.name`, for diagnostics.
    pub object: String,
    /// The position of the object itself (its name in the table header).
    pub at: Origin,
    /// "an extent", "a target group": how unknown keys are described.
    what: &'static str,
    known: Vec<&'static str>,
}

/// The TOML type a getter expects, with how to write it.
#[derive(Clone, Copy)]
enum Expect {
    String,
    Integer,
    Bool,
    Array,
    Table,
}

impl Expect {
    fn name(self) -> &'static str {
        match self {
            Expect::String => "a string",
            Expect::Integer => "an integer",
            Expect::Bool => "true or false",
            Expect::Array => "a list",
            Expect::Table => "a table",
        }
    }
    fn fix(self, key: &str) -> String {
        match self {
            Expect::String => format!("put the value of `{key}` in double quotes"),
            Expect::Integer => format!("write `{key}` as a whole number, without quotes"),
            Expect::Bool => format!("write `{key} = true` or `{key} = false`, without quotes"),
            Expect::Array => format!("write `{key}` as a list: {key} = [\"…\", \"…\"]"),
            Expect::Table => format!("write `{key}` as a table: [….{key}] or {key} = {{ … }}"),
        }
    }
}

/// What a TOML value is, for "found …" in messages (never the value itself).
pub(crate) fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a decimal number",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "a list",
        DeValue::Table(_) => "a table",
    }
}

/// The integer value of a TOML integer (any radix), if it fits in an i128.
pub(crate) fn integer_of(v: &DeValue<'_>) -> Option<i128> {
    match v {
        DeValue::Integer(i) => i128::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok(),
        _ => None,
    }
}

impl<'a, 'i> Fields<'a, 'i> {
    pub fn new(
        src: &'a SourceFile,
        table: &'a DeTable<'i>,
        object: String,
        at: Origin,
        what: &'static str,
    ) -> Self {
        Fields {
            src,
            table,
            object,
            at,
            what,
            known: Vec::new(),
        }
    }

    pub fn origin(&self, span: std::ops::Range<usize>) -> Origin {
        self.src.origin(span.start)
    }

    /// The raw value of `key`, marking the key as known.
    pub fn raw(&mut self, key: &'static str) -> Option<(&'a Spanned<DeValue<'i>>, Origin, Origin)> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        let table: &'a DeTable<'i> = self.table;
        let (k, v) = table.get_key_value(key)?;
        Some((
            v,
            self.src.origin(v.span().start),
            self.src.origin(k.span().start),
        ))
    }

    /// True when `key` is present (and marks it known).
    pub fn has(&mut self, key: &'static str) -> bool {
        self.raw(key).is_some()
    }

    fn wrong_type(&self, d: &mut Diags, key: &str, found: &DeValue<'_>, at: &Origin, e: Expect) {
        d.error(
            at,
            &self.object,
            format!("`{key}` must be {}, found {}", e.name(), type_name(found)),
            e.fix(key),
        );
    }

    pub fn string(&mut self, d: &mut Diags, key: &'static str) -> Option<Val<String>> {
        let (v, at, key_at) = self.raw(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(Val {
                v: s.to_string(),
                at,
                key_at,
            }),
            other => {
                self.wrong_type(d, key, other, &at, Expect::String);
                None
            }
        }
    }

    pub fn bool(&mut self, d: &mut Diags, key: &'static str) -> Option<Val<bool>> {
        let (v, at, key_at) = self.raw(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(Val { v: *b, at, key_at }),
            other => {
                self.wrong_type(d, key, other, &at, Expect::Bool);
                None
            }
        }
    }

    pub fn integer(&mut self, d: &mut Diags, key: &'static str) -> Option<Val<i128>> {
        let (v, at, key_at) = self.raw(key)?;
        match integer_of(v.get_ref()) {
            Some(n) => Some(Val { v: n, at, key_at }),
            None => {
                self.wrong_type(d, key, v.get_ref(), &at, Expect::Integer);
                None
            }
        }
    }

    /// A list of strings; elements of another type are reported one by one and left out.
    pub fn string_list(
        &mut self,
        d: &mut Diags,
        key: &'static str,
    ) -> Option<Val<Vec<Val<String>>>> {
        let (v, at, key_at) = self.raw(key)?;
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(d, key, v.get_ref(), &at, Expect::Array);
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            let item_at = self.src.origin(item.span().start);
            match item.get_ref() {
                DeValue::String(s) => out.push(Val {
                    v: s.to_string(),
                    at: item_at,
                    key_at: key_at.clone(),
                }),
                other => d.error(
                    &item_at,
                    &self.object,
                    format!(
                        "every element of `{key}` must be a string, found {}",
                        type_name(other)
                    ),
                    "put each element in double quotes",
                ),
            }
        }
        Some(Val { v: out, at, key_at })
    }

    /// A sub-table: its entries with the positions of key and value.
    pub fn table(&mut self, d: &mut Diags, key: &'static str) -> Option<Val<&'a DeTable<'i>>> {
        let (v, at, key_at) = self.raw(key)?;
        match v.get_ref() {
            DeValue::Table(t) => Some(Val { v: t, at, key_at }),
            other => {
                self.wrong_type(d, key, other, &at, Expect::Table);
                None
            }
        }
    }

    /// A missing required key: reported at the object's name.
    pub fn missing(&self, d: &mut Diags, key: &str, fix: impl Into<String>) {
        d.error(&self.at, &self.object, format!("missing key `{key}`"), fix);
    }

    /// Report every key no getter asked for.
    pub fn finish(self, d: &mut Diags) {
        for (k, _) in self.table.iter() {
            let key: &str = k.get_ref();
            if self.known.contains(&key) {
                continue;
            }
            let at = self.src.origin(k.span().start);
            match closest(key, self.known.iter().copied()) {
                Some(near) => d.error(
                    &at,
                    &self.object,
                    format!("unknown key `{key}`; did you mean `{near}`?"),
                    format!("rename `{key}` to `{near}`"),
                ),
                None => d.error(
                    &at,
                    &self.object,
                    format!("unknown key `{key}`"),
                    format!(
                        "remove it; the keys of {} are: {}",
                        self.what,
                        self.known.join(", ")
                    ),
                ),
            }
        }
    }
}
