//! The nesting limit, checked on the text before the YAML parser reads it.

use super::error::ConfigError;
use super::outline::{split_key, Locator};

/// The deepest nesting of collections accepted. A real config nests about six deep; the YAML
/// parser takes time quadratic in the depth of flow collections (`[[[…`), so deeper text is
/// refused before it is parsed.
pub const MAX_NESTING: usize = 64;

/// Refuses text nested deeper than [`MAX_NESTING`] before the YAML parser sees it, reading each
/// byte once. It is not a YAML parser: it counts block collections (indentation and `- `/`? `
/// markers) and flow collections (`[`, `{`) where a value starts, skipping comments, quoted and
/// block scalars, and errs on the side of counting deeper.
pub(super) fn check_nesting(text: &str, locator: &Locator<'_>) -> Result<(), ConfigError> {
    let mut scan = NestingScan::default();
    for (index, line) in text.lines().enumerate() {
        if scan.line(line) > MAX_NESTING {
            // No key: the outline does not read flow collections, the usual culprit.
            return Err(ConfigError::new(
                locator.source,
                Some(index + 1),
                None,
                format!("nested more than {MAX_NESTING} collections deep (the limit)"),
            ));
        }
    }
    Ok(())
}

/// What [`check_nesting`] carries from one line to the next.
#[derive(Default)]
struct NestingScan {
    /// Indentation of each open block collection.
    blocks: Vec<usize>,
    /// Open flow collections.
    flow: usize,
    /// The quote of a quoted scalar that goes on past the line.
    quote: Option<u8>,
    /// Indentation of the key whose block scalar (`|`, `>`) is being read.
    block_scalar: Option<usize>,
}

impl NestingScan {
    /// Reads one line; returns the deepest nesting seen on it.
    fn line(&mut self, line: &str) -> usize {
        let bytes = line.as_bytes();
        let mut at = 0;
        if self.flow == 0 && self.quote.is_none() {
            let indent = bytes.iter().take_while(|&&b| b == b' ').count();
            let body = &line[indent..];
            if body.is_empty()
                || body.starts_with('#')
                || self.block_scalar.is_some_and(|key| indent > key)
            {
                return self.blocks.len();
            }
            self.block_scalar = None;
            self.blocks.retain(|&level| level < indent);
            self.blocks.push(indent);
            at = skip_blanks(bytes, indent);
            // A document start: `---` and a blank, or nothing.
            if indent == 0
                && body.starts_with("---")
                && matches!(bytes.get(3), None | Some(b' ' | b'\t'))
            {
                at = skip_blanks(bytes, 3);
            }
            // `- ` and `? ` open a collection inside the one of this line.
            while matches!(bytes.get(at), Some(b'-' | b'?'))
                && matches!(bytes.get(at + 1), None | Some(b' ' | b'\t'))
            {
                at = skip_blanks(bytes, at + 1);
                self.blocks.push(at);
            }
            at = skip_properties(bytes, at);
            if bytes.get(at) == Some(&b'#') {
                return self.blocks.len();
            }
            // A flow collection here may be a key (`[a]: [b]`): the flow scan reads on past it.
            let flow_first = matches!(bytes.get(at), Some(b'[' | b'{'));
            if let Some((_, value)) = split_key(&line[at..]).filter(|_| !flow_first) {
                at = skip_properties(bytes, skip_blanks(bytes, line.len() - value.len()));
            }
            match bytes.get(at) {
                Some(b'[' | b'{' | b'"' | b'\'') => {}
                Some(b'|' | b'>') => {
                    self.block_scalar = Some(indent);
                    return self.blocks.len();
                }
                // A comment, or a plain scalar whose brackets are text.
                _ => return self.blocks.len(),
            }
        }
        let mut deepest = self.blocks.len() + self.flow;
        // A quote opens a scalar only where a token starts, as a value or a line does here.
        let mut token_start = true;
        while at < bytes.len() {
            let byte = bytes[at];
            at += 1;
            if let Some(quote) = self.quote {
                // `\"` inside double quotes, `''` inside single ones: the quote goes on.
                let escaped = match quote {
                    b'"' => byte == b'\\',
                    _ => byte == b'\'' && bytes.get(at) == Some(&b'\''),
                };
                if escaped {
                    at += 1;
                } else if byte == quote {
                    // What follows may still open a collection: `'a': [b]`.
                    self.quote = None;
                }
                continue;
            }
            match byte {
                b'"' | b'\'' if token_start => self.quote = Some(byte),
                // A comment starts after a blank, or at the start of a line.
                b'#' if at == 1 || matches!(bytes[at - 2], b' ' | b'\t') => break,
                // Outside a flow collection (after one that was a key, as in `[a]: [b]`), only
                // where a value starts.
                b'[' | b'{' if self.flow > 0 || token_start => {
                    self.flow += 1;
                    deepest = deepest.max(self.blocks.len() + self.flow);
                }
                b']' | b'}' => self.flow = self.flow.saturating_sub(1),
                _ => {}
            }
            token_start = matches!(byte, b' ' | b'\t' | b'[' | b'{' | b',' | b':');
        }
        deepest
    }
}

/// The index after the anchors (`&a`) and tags (`!t`) at `at`, which come before the node they
/// name, key or value.
fn skip_properties(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b'&' | b'!')) {
        let end = bytes[at..]
            .iter()
            .position(|&b| matches!(b, b' ' | b'\t'))
            .map_or(bytes.len(), |len| at + len);
        at = skip_blanks(bytes, end);
    }
    at
}

/// The index of the first byte at or after `at` that is not a space or tab.
fn skip_blanks(bytes: &[u8], at: usize) -> usize {
    at + bytes.get(at..).map_or(0, |rest| {
        rest.iter()
            .take_while(|&&b| matches!(b, b' ' | b'\t'))
            .count()
    })
}
