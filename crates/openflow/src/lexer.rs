//! The tokens of the `ovs-ofctl` syntax: top-level splitting (separators inside parentheses and
//! brackets do not count) and `key=value` pairs. Used by the flow and action parser and by
//! `Match`'s own parser.

/// Splits at top-level commas (and, if `spaces`, whitespace), ignoring separators inside
/// parentheses and brackets; empty pieces are dropped.
pub(crate) fn split(s: &str, spaces: bool) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            c if spaces && depth == 0 && c.is_whitespace() => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// Splits at top-level commas and whitespace.
pub(crate) fn split_top(s: &str) -> Vec<&str> {
    split(s, true)
}

/// `key=value` → `(key, Some(value))`, `key` → `(key, None)`.
pub(crate) fn key_value(t: &str) -> (&str, Option<&str>) {
    match t.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v.trim())),
        None => (t, None),
    }
}
