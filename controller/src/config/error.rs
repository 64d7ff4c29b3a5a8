//! [`ConfigError`]: what went wrong, and where in the file.

use std::fmt;
use std::path::{Path, PathBuf};

/// A config file that cannot be read, parsed or accepted, with where in it the problem is.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based; only known for parse errors.
    pub column: Option<usize>,
    /// Dotted key path such as `projects.app.agent`.
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub(super) fn new(
        file: &Path,
        line: Option<usize>,
        key: Option<String>,
        message: String,
    ) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line,
            column: None,
            key,
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        match &self.key {
            Some(key) if !self.message.starts_with(key.as_str()) => {
                write!(f, ": {key}: {}", self.message)
            }
            _ => write!(f, ": {}", self.message),
        }
    }
}
