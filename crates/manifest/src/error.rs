//! Errors that name the file, the line, the key and what was expected.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A key of a table.
    Key(String),
    /// An element of an array (`[[functions.x.routes]]` tables are arrays).
    Index(usize),
}

/// A key path such as `functions.hello.resources.memory` or `functions.web.routes[0].path`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The path of a key under this one.
    pub fn key(&self, k: &str) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_string()));
        KeyPath(v)
    }

    /// The path of an element under this one.
    pub fn index(&self, i: usize) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        KeyPath(v)
    }

    /// A path of keys.
    pub fn of(keys: &[&str]) -> KeyPath {
        KeyPath(keys.iter().map(|k| Seg::Key(k.to_string())).collect())
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The manifest file as the user named it.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The key path, e.g. `functions.hello.resources.memory`; empty for the whole file.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a manifest (at least one), in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects errors against one file's text, locating keys to lines.
pub(crate) struct Sink<'a> {
    file: &'a str,
    text: &'a str,
    doc: Option<Spanned<DeTable<'a>>>,
    pub(crate) errors: Vec<ManifestError>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Sink<'a> {
        Sink {
            file,
            text,
            doc: DeTable::parse(text).ok(),
            errors: Vec::new(),
        }
    }

    /// Records an error at a key; `at_key` points at the key itself rather than its value.
    pub(crate) fn at(&mut self, path: &KeyPath, message: impl Into<String>) {
        let span = self.doc.as_ref().and_then(|d| locate(d, &path.0));
        self.push(span, path.to_string(), message.into());
    }

    /// Records an error at a byte range of the text.
    pub(crate) fn push(&mut self, span: Option<Range<usize>>, key: String, message: String) {
        let (line, column) = match span {
            Some(r) => {
                let (l, c) = line_col(self.text, r.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        self.errors.push(ManifestError {
            file: self.file.to_string(),
            line,
            column,
            key,
            message,
        });
    }

    /// Records a parse or type error from the TOML deserializer, finding the key it is about.
    pub(crate) fn toml(&mut self, e: &toml::de::Error) {
        let span = e.span();
        let message = e.message().trim().replace('\n', " ");
        let key = match (&self.doc, &span) {
            (Some(d), Some(s)) => trim_to_field(path_at(d, s), &message).to_string(),
            _ => String::new(),
        };
        self.push(span, key, message);
    }

    pub(crate) fn finish(mut self) -> Result<(), ManifestErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            self.errors
                .sort_by_key(|e| (e.line.is_none(), e.line, e.column));
            Err(ManifestErrors(self.errors))
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// The span of the value at `path` (or of the key when the value has none of its own).
fn locate(doc: &Spanned<DeTable<'_>>, path: &[Seg]) -> Option<Range<usize>> {
    let mut span = None;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut array: Option<&toml::de::DeArray<'_>> = None;
    for seg in path {
        let value: &Spanned<DeValue<'_>> = match seg {
            Seg::Key(k) => {
                let t = table?;
                let (key, value) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k)?;
                // A table made by a header has no useful span of its own: point at its key.
                span = Some(if value.get_ref().is_table() {
                    key.span()
                } else {
                    value.span()
                });
                value
            }
            Seg::Index(i) => {
                let a = array?;
                let value = a.get(*i)?;
                span = Some(value.span());
                value
            }
        };
        table = value.get_ref().as_table();
        array = value.get_ref().as_array();
    }
    span
}

/// The key path an error span is about: the deepest key or value that contains the whole
/// span, else the deepest that overlaps it (a table made by a header has a span of its own
/// that does not cover its keys). An `unknown field` error is put at that field.
fn path_at(doc: &Spanned<DeTable<'_>>, span: &Range<usize>) -> KeyPath {
    let mut out = Vec::new();
    if !search_table(doc.get_ref(), span, &mut out, contains) {
        out.clear();
        search_table(doc.get_ref(), span, &mut out, overlaps);
    }
    KeyPath(out)
}

/// Cuts a path after the key an `unknown field` message names.
pub(crate) fn trim_to_field(path: KeyPath, message: &str) -> KeyPath {
    let field = message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next());
    let Some(field) = field else {
        return path;
    };
    match path
        .0
        .iter()
        .rposition(|s| matches!(s, Seg::Key(k) if k == field))
    {
        Some(i) => KeyPath(path.0[..=i].to_vec()),
        None => path.key(field),
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && !outer.is_empty()
}

fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    if b.is_empty() {
        a.start <= b.start && b.start < a.end.max(a.start + 1)
    } else {
        a.start < b.end && b.start < a.end
    }
}

type Hit = fn(&Range<usize>, &Range<usize>) -> bool;

fn search_table(t: &DeTable<'_>, span: &Range<usize>, out: &mut Vec<Seg>, hit: Hit) -> bool {
    for (k, v) in t.iter() {
        out.push(Seg::Key(k.get_ref().to_string()));
        if hit(&k.span(), span) || search_value(v, span, out, hit) || hit(&v.span(), span) {
            return true;
        }
        out.pop();
    }
    false
}

fn search_value(
    v: &Spanned<DeValue<'_>>,
    span: &Range<usize>,
    out: &mut Vec<Seg>,
    hit: Hit,
) -> bool {
    match v.get_ref() {
        DeValue::Table(t) => search_table(t, span, out, hit),
        DeValue::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                out.push(Seg::Index(i));
                if search_value(e, span, out, hit) || hit(&e.span(), span) {
                    return true;
                }
                out.pop();
            }
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_print_like_toml() {
        let p = KeyPath::of(&["functions", "a.b", "routes"])
            .index(2)
            .key("path");
        assert_eq!(p.to_string(), "functions.\"a.b\".routes[2].path");
    }

    #[test]
    fn lines_and_columns() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é\nx", 3), (2, 1));
    }
}
