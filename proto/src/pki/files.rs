//! The files of a CA and of a credential in their directory: names, owner-only modes, and
//! writes that are atomic.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::error::PkiError;

pub(super) const CA_CRT: &str = "ca.crt";
pub(super) const CA_KEY: &str = "ca.key";
pub(super) const TLS_CRT: &str = "tls.crt";
pub(super) const TLS_KEY: &str = "tls.key";
/// The key of the certificate before the last renewal, until the new one is in place.
pub(super) const TLS_KEY_PREV: &str = "tls.key.prev";

pub(super) fn read_file(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            PkiError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            PkiError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Creates `dir` if needed and sets its mode to 0700.
pub(super) fn prepare_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        action: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(|source| PkiError::Io {
        action: "set the permissions of",
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `data` to a temporary file beside `path` with `mode`, syncs it, renames it over `path`.
pub(super) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let io_err = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| PkiError::Io {
            action,
            path: p,
            source,
        }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("write", &tmp))?;
    // An old temporary file keeps its mode through `open`; set it again.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(io_err("set the permissions of", &tmp))?;
    file.write_all(data).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("write", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err("write", path))
}

/// Best effort: makes the renames in `dir` durable.
pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
