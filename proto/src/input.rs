//! What may be typed into an agent as text. Control bytes reach the agent's
//! terminal as keys: `\x03` interrupts it, `\x1b[…` moves its cursor or
//! answers its questions. The controller refuses them unless the sender asked
//! for raw input, so every client is covered.

/// A control byte in text that is meant as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} has control byte {byte:#04x}{name} at byte {offset}: {rule}")]
pub struct ControlByteError {
    /// What the text is: "the text", "the prompt".
    pub what: &'static str,
    pub byte: u8,
    /// Where it is, counted in bytes from 0.
    pub offset: usize,
    /// How a person knows the byte, e.g. " (Ctrl-C)".
    name: String,
    /// What is allowed, and how to send it anyway where there is a way.
    rule: &'static str,
}

const TEXT_RULE: &str = "control bytes other than newline and tab are refused";

/// Checks that `text` for `ao send` holds no C0 control byte other than
/// `\n` and `\t`, and no DEL.
///
/// # Errors
/// The first such byte and its offset.
pub fn check_text(text: &str) -> Result<(), ControlByteError> {
    check(
        text,
        "the text",
        "control bytes other than newline and tab are refused (send with --raw to type them as \
         keys)",
        |b| matches!(b, b'\n' | b'\t'),
    )
}

/// [`check_text`] for a task prompt, which is typed in as text too.
///
/// # Errors
/// The first control byte and its offset.
pub fn check_prompt(text: &str) -> Result<(), ControlByteError> {
    check(text, "the prompt", TEXT_RULE, |b| {
        matches!(b, b'\n' | b'\t')
    })
}

/// Checks a one-line name (an issue id): no control byte at all. It ends up
/// in the default prompt, a branch name, tables and `AO_ISSUE_ID`.
///
/// # Errors
/// The first control byte and its offset.
pub fn check_name(what: &'static str, text: &str) -> Result<(), ControlByteError> {
    check(text, what, "a name is one line of text", |_| false)
}

fn check(
    text: &str,
    what: &'static str,
    rule: &'static str,
    allowed: impl Fn(u8) -> bool,
) -> Result<(), ControlByteError> {
    let Some((offset, byte)) = text
        .bytes()
        .enumerate()
        .find(|(_, b)| b.is_ascii_control() && !allowed(*b))
    else {
        return Ok(());
    };
    let name = match byte {
        0x1b => " (Escape)".to_string(),
        0x7f => " (Delete)".to_string(),
        b'\r' => " (carriage return)".to_string(),
        // Ctrl-@ … Ctrl-_: the key that sends it.
        b => format!(" (Ctrl-{})", char::from(b + 0x40)),
    };
    Err(ControlByteError {
        what,
        byte,
        offset,
        name,
        rule,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_are_named_with_their_offset() {
        assert_eq!(check_text("plain text\twith tabs\nand lines é ✓"), Ok(()));
        let err = check_text("\x03").unwrap_err();
        assert_eq!((err.byte, err.offset), (3, 0));
        assert_eq!(
            err.to_string(),
            "the text has control byte 0x03 (Ctrl-C) at byte 0: control bytes other than newline \
             and tab are refused (send with --raw to type them as keys)"
        );
        let err = check_text("é\x1b[A").unwrap_err();
        assert_eq!((err.byte, err.offset), (0x1b, 2));
        assert!(err.to_string().contains("0x1b (Escape)"), "{err}");
        assert!(check_text("a\rb").unwrap_err().to_string().contains("0x0d"));
        assert_eq!(
            check_prompt("fix \x1b[2J").unwrap_err().to_string(),
            "the prompt has control byte 0x1b (Escape) at byte 4: control bytes other than \
             newline and tab are refused"
        );
        assert_eq!(
            check_name("the issue id", "X\x03Y")
                .unwrap_err()
                .to_string(),
            "the issue id has control byte 0x03 (Ctrl-C) at byte 1: a name is one line of text"
        );
        assert!(check_name("the issue id", "a\tb").is_err());
        assert!(check_text("\x7f")
            .unwrap_err()
            .to_string()
            .contains("0x7f (Delete)"));
        assert!(check_text("\0")
            .unwrap_err()
            .to_string()
            .contains("(Ctrl-@)"));
    }
}
