//! Where a key is in the text: the key path of each line, and errors that point at it.

use std::path::Path;

use super::error::ConfigError;

/// Builds errors that point at the line of a key path in the original text.
pub(super) struct Locator<'a> {
    pub(super) source: &'a Path,
    /// For each line, the key path of the mapping entry it belongs to; see [`outline`].
    pub(super) outline: Vec<Vec<&'a str>>,
}

impl Locator<'_> {
    /// The error for `path`, at the line of its deepest ancestor present in the text (a key
    /// that was defaulted has no line of its own).
    pub(super) fn error(&self, path: &[&str], message: impl Into<String>) -> ConfigError {
        let line = (1..=path.len())
            .rev()
            .find_map(|len| self.line(&path[..len]));
        ConfigError::new(self.source, line, Some(path.join(".")), message.into())
    }

    /// The 1-based line of the entry with key path `path`, if the text has one.
    pub(super) fn line(&self, path: &[&str]) -> Option<usize> {
        locate(&self.outline, path)
    }
}

/// For each line of a YAML text, the key path of the mapping entry it belongs to (empty for blank
/// and comment lines). This is a small indentation-based reading of block-style YAML, enough to
/// point errors at lines; flow collections and multi-line quoted keys are not understood.
pub(super) fn outline(text: &str) -> Vec<Vec<&str>> {
    let mut stack: Vec<(usize, &str)> = Vec::new();
    // Indentation of the key whose block scalar (`|`, `>`) is being read: its text has no keys.
    let mut block_scalar: Option<usize> = None;
    fn keys<'t>(stack: &[(usize, &'t str)]) -> Vec<&'t str> {
        stack.iter().map(|&(_, key)| key).collect()
    }
    text.lines()
        .map(|line| {
            let body = line.trim_start_matches(' ');
            let raw_indent = line.len() - body.len();
            if body.is_empty() || body.starts_with('#') {
                return Vec::new();
            }
            if block_scalar.is_some_and(|indent| raw_indent > indent) {
                return keys(&stack);
            }
            block_scalar = None;
            // A key after `- ` sits at the column where its text starts.
            let (mut indent, mut body, mut in_sequence) = (raw_indent, body, false);
            while let Some(rest) = body
                .strip_prefix('-')
                .filter(|r| r.is_empty() || r.starts_with(' '))
            {
                let trimmed = rest.trim_start_matches(' ');
                indent += body.len() - trimmed.len();
                (body, in_sequence) = (trimmed, true);
            }
            match split_key(body) {
                Some((key, value)) => {
                    stack.retain(|&(level, _)| level < indent);
                    stack.push((indent, key));
                    if value.trim_start().starts_with(['|', '>']) {
                        block_scalar = Some(indent);
                    }
                }
                // A sequence may sit at the same indentation as the key that holds it.
                None if in_sequence => stack.retain(|&(level, _)| level <= raw_indent),
                None => stack.retain(|&(level, _)| level < raw_indent),
            }
            keys(&stack)
        })
        .collect()
}

/// Splits `key: value` (or `key:`, or a tab after the colon) into the unquoted key and the rest
/// after the colon.
pub(super) fn split_key(body: &str) -> Option<(&str, &str)> {
    if let Some(quote) = body.chars().next().filter(|c| matches!(c, '"' | '\'')) {
        let end = body[1..].find(quote)? + 1;
        let rest = body[end + 1..].strip_prefix(':')?;
        return (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some((&body[1..end], rest));
    }
    let (colon, _) = body.match_indices(':').find(|&(at, _)| {
        let rest = &body[at + 1..];
        rest.is_empty() || rest.starts_with([' ', '\t'])
    })?;
    Some((body[..colon].trim_end(), &body[colon + 1..]))
}

/// The 1-based line of the entry with key path `path`, if the outline has one.
fn locate(outline: &[Vec<&str>], path: &[&str]) -> Option<usize> {
    outline
        .iter()
        .position(|entry| entry == path)
        .map(|index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outline_follows_sequences_and_skips_block_scalars() {
        let text = "a:\n  - b: 1\n    c:\n  d: |\n    e: no\n  'f g': 2\n";
        assert_eq!(locate(&outline(text), &["a", "c"]), Some(3));
        assert_eq!(locate(&outline(text), &["a", "d", "e"]), None);
        assert_eq!(locate(&outline(text), &["a", "f g"]), Some(6));
    }
}
